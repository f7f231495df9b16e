//! The JSON of the dashboard's endpoints, typed: `GET /admin/series`
//! ([`SeriesReport`]), `GET /admin/traffic` ([`TrafficReport`]) and
//! `GET /admin/experiments` ([`ExperimentsReport`], which joins the
//! ledger's per-arm usage with the counts here and the ratings).
//!
//! It reads counts only: it must not change them.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use super::buckets::{each_model, ArmCell, Models, RouteCell, Score, Traffic, Usage};
use super::hist::Latency;
use super::Data;
use crate::budget::amount::usd;
use crate::budget::{window, CellReport, UsageReport};
use crate::config::{Snapshot, Target, Window};

/// Hours in the hourly series; days in the daily one.
pub const SERIES_HOURS: usize = 24;
pub const SERIES_DAYS: usize = 30;

fn rfc3339(secs: i64) -> String {
    window::rfc3339(secs)
}

fn tz_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_string()
}

/// Requests and how they went.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficRow {
    /// Answered since the start, plus those charged before it (ledger).
    pub requests: u64,
    /// Answered by this process: the error rate and latencies are over these.
    pub observed: u64,
    pub errors: u64,
    /// errors / observed, 0–1 (`null` before any).
    pub error_rate: Option<f64>,
    #[serde(flatten)]
    pub latency: Latency,
}

impl From<&Traffic> for TrafficRow {
    fn from(t: &Traffic) -> Self {
        TrafficRow {
            requests: t.requests,
            observed: t.observed,
            errors: t.errors,
            error_rate: t.error_rate().map(|r| (r * 1e4).round() / 1e4),
            latency: t.latency.summary(),
        }
    }
}

// === series ===

/// `GET /admin/series?step=hour|day`: per bucket, oldest first.
#[derive(Debug, Serialize)]
pub struct SeriesReport {
    pub step: &'static str,
    pub timezone: String,
    /// When this process started: latency and errors are counted since.
    pub since: String,
    /// Bucket starts (Unix seconds): the last 24 UTC hours or 30 days.
    pub t: Vec<i64>,
    pub total: SeriesColumns,
    pub models: Vec<ModelSeries>,
    pub providers: Vec<ProviderSeries>,
}

#[derive(Debug, Default, Serialize)]
pub struct SeriesColumns {
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
    pub cost_usd: Vec<f64>,
    pub p50_ms: Vec<Option<f64>>,
    pub p95_ms: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
pub struct ModelSeries {
    pub model: String,
    pub provider: String,
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
    pub cost_usd: Vec<f64>,
    pub input_tokens: Vec<u64>,
    pub output_tokens: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProviderSeries {
    pub provider: String,
    pub requests: Vec<u64>,
    pub cost_usd: Vec<f64>,
}

/// Bucket starts of the last `n` calendar days in `tz`, oldest first.
fn day_starts(tz: &TimeZone, now: Timestamp, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let (mut start, _) = window::bounds(Window::Day, tz, now);
    for _ in 0..n {
        out.push(start);
        let prev = Timestamp::from_second(start - 1).unwrap_or(Timestamp::UNIX_EPOCH);
        start = window::bounds(Window::Day, tz, prev).0;
    }
    out.reverse();
    out
}

/// One bucket's models and totals.
type Cells<'a> = (&'a Models, &'a Traffic);

fn round_usd(nanos: u64) -> f64 {
    (usd(nanos) * 1e9).round() / 1e9
}

impl Data {
    pub fn series(&self, step: Window, snap: &Snapshot, now: Timestamp, started: i64) -> SeriesReport {
        let tz = &snap.timezone;
        let (t, cells): (Vec<i64>, Vec<Option<Cells<'_>>>) = if step == Window::Hour {
            let now_h = now.as_second() - now.as_second().rem_euclid(3600);
            let t: Vec<i64> = (0..SERIES_HOURS as i64).rev().map(|i| now_h - i * 3600).collect();
            let cells = t.iter().map(|s| self.buckets.hours.iter().find(|h| h.start == *s).map(|h| (&h.models, &h.traffic))).collect();
            (t, cells)
        } else {
            let t = day_starts(tz, now, SERIES_DAYS);
            let cells = t.iter().map(|s| self.buckets.days.iter().find(|d| d.start == *s).map(|d| (&d.models, &d.traffic))).collect();
            (t, cells)
        };
        let n = t.len();
        let mut total = SeriesColumns::default();
        let mut models: BTreeMap<(String, String), ModelSeries> = BTreeMap::new();
        let mut providers: BTreeMap<String, ProviderSeries> = BTreeMap::new();
        for (i, c) in cells.iter().enumerate() {
            let (requests, errors, cost, lat) = match c {
                Some((ms, tr)) => (tr.requests, tr.errors, each_model(ms).map(|(_, _, u)| u.nanos).sum::<u64>(), tr.latency.summary()),
                None => (0, 0, 0, Latency { p50_ms: None, p95_ms: None }),
            };
            total.requests.push(requests);
            total.errors.push(errors);
            total.cost_usd.push(round_usd(cost));
            total.p50_ms.push(lat.p50_ms);
            total.p95_ms.push(lat.p95_ms);
            let Some((ms, _)) = c else { continue };
            for (provider, model, u) in each_model(ms) {
                let m = models.entry((provider.to_string(), model.to_string())).or_insert_with(|| ModelSeries {
                    model: model.to_string(),
                    provider: provider.to_string(),
                    requests: vec![0; n],
                    errors: vec![0; n],
                    cost_usd: vec![0.0; n],
                    input_tokens: vec![0; n],
                    output_tokens: vec![0; n],
                });
                m.requests[i] += u.traffic.requests;
                m.errors[i] += u.traffic.errors;
                m.cost_usd[i] = round_usd((m.cost_usd[i] * 1e9).round() as u64 + u.nanos);
                m.input_tokens[i] += u.input;
                m.output_tokens[i] += u.output;
                let p = providers.entry(provider.to_string()).or_insert_with(|| ProviderSeries {
                    provider: provider.to_string(),
                    requests: vec![0; n],
                    cost_usd: vec![0.0; n],
                });
                p.requests[i] += u.traffic.requests;
                p.cost_usd[i] = round_usd((p.cost_usd[i] * 1e9).round() as u64 + u.nanos);
            }
        }
        SeriesReport {
            step: if step == Window::Hour { "hour" } else { "day" },
            timezone: tz_name(tz),
            since: rfc3339(started),
            t,
            total,
            models: models.into_values().collect(),
            providers: providers.into_values().collect(),
        }
    }
}

// === traffic ===

/// `GET /admin/traffic?window=day|month`: this calendar day or month.
#[derive(Debug, Serialize)]
pub struct TrafficReport {
    pub window: &'static str,
    pub from: String,
    pub to: String,
    pub since: String,
    pub timezone: String,
    pub total: TrafficRow,
    pub models: Vec<ModelRow>,
    pub routes: Vec<RouteRow>,
}

#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub provider: String,
    #[serde(flatten)]
    pub traffic: TrafficRow,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub route: String,
    /// `model`, `tiers`, `select`, `split`; `none` for requests no route
    /// matched; `removed` for a route no longer in the config.
    pub kind: &'static str,
    pub shadow: bool,
    #[serde(flatten)]
    pub traffic: TrafficRow,
    /// Requests by the model that served, most first (`none`: refused).
    pub models: Vec<Count>,
    /// Model calls by complexity score 0–10.
    pub complexity: [u64; 11],
    /// Tier routes: requests per tier, by their complexity score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<TierRow>>,
    /// Shadow mode: what routing would have chosen vs what served.
    pub shadow_decisions: Vec<ShadowRow>,
    pub downgraded: u64,
}

#[derive(Debug, Serialize)]
pub struct Count {
    pub model: String,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct TierRow {
    pub max_complexity: u8,
    pub model: String,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct ShadowRow {
    pub would: String,
    pub served: String,
    pub requests: u64,
}

fn kind_of(t: &Target) -> &'static str {
    match t {
        Target::Model(_) => "model",
        Target::Tiers(_) => "tiers",
        Target::Select(_) => "select",
        Target::Split(_) => "split",
    }
}

fn counts(map: &hashbrown::HashMap<String, u64>) -> Vec<Count> {
    let mut v: Vec<Count> = map.iter().map(|(k, n)| Count { model: k.clone(), requests: *n }).collect();
    v.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.model.cmp(&b.model)));
    v
}

impl Data {
    pub fn traffic(&self, w: Window, snap: &Snapshot, now: Timestamp, started: i64) -> TrafficReport {
        let tz = &snap.timezone;
        let (from, to) = window::bounds(w, tz, now);
        let mut total = Traffic::default();
        let mut models: BTreeMap<(String, String), Usage> = BTreeMap::new();
        let mut routes: BTreeMap<String, RouteCell> = BTreeMap::new();
        for d in self.buckets.days_in(from, to) {
            total.merge(&d.traffic);
            for (provider, model, u) in each_model(&d.models) {
                models.entry((provider.to_string(), model.to_string())).or_default().merge(u);
            }
            for (k, r) in &d.routes {
                routes.entry(k.clone()).or_default().merge(r);
            }
        }
        let mut model_rows: Vec<ModelRow> = models
            .iter()
            .map(|((provider, model), u)| ModelRow {
                model: model.to_string(),
                provider: provider.to_string(),
                traffic: TrafficRow::from(&u.traffic),
                cost_usd: round_usd(u.nanos),
                input_tokens: u.input,
                output_tokens: u.output,
            })
            .collect();
        model_rows.sort_by(|a, b| b.traffic.requests.cmp(&a.traffic.requests).then_with(|| a.model.cmp(&b.model)));
        // Config order first (a route without traffic still shows), then
        // what else was seen.
        let mut route_rows = Vec::new();
        let empty = RouteCell::default();
        for r in &snap.routes {
            let cell = routes.remove(&r.name);
            route_rows.push(route_row(&r.name, kind_of(&r.target), r.shadow || snap.routing.shadow, Some(&r.target), cell.as_ref().unwrap_or(&empty)));
        }
        for (name, cell) in &routes {
            route_rows.push(route_row(name, if name == "none" { "none" } else { "removed" }, false, None, cell));
        }
        TrafficReport {
            window: w.as_str(),
            from: rfc3339(from),
            to: rfc3339(to),
            since: rfc3339(started),
            timezone: tz_name(tz),
            total: TrafficRow::from(&total),
            models: model_rows,
            routes: route_rows,
        }
    }
}

fn route_row(name: &str, kind: &'static str, shadow: bool, target: Option<&Target>, c: &RouteCell) -> RouteRow {
    let tiers = match target {
        Some(Target::Tiers(tiers)) => {
            let mut low = 0usize;
            Some(
                tiers
                    .iter()
                    .map(|t| {
                        let high = usize::from(t.max_complexity.min(10));
                        let n = if high >= low { c.complexity[low..=high].iter().sum() } else { 0 };
                        low = high + 1;
                        TierRow { max_complexity: t.max_complexity, model: t.model.clone(), requests: n }
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let mut shadow_decisions: Vec<ShadowRow> = c
        .shadow
        .iter()
        .flat_map(|(would, served)| served.iter().map(move |(m, n)| ShadowRow { would: would.clone(), served: m.clone(), requests: *n }))
        .collect();
    shadow_decisions.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.would.cmp(&b.would)));
    RouteRow {
        route: name.to_string(),
        kind,
        shadow,
        traffic: TrafficRow::from(&c.traffic),
        models: counts(&c.models),
        complexity: c.complexity,
        tiers,
        shadow_decisions,
        downgraded: c.downgraded,
    }
}

// === experiments ===

/// `GET /admin/experiments?window=day|month`: every split route's arms.
#[derive(Debug, Serialize)]
pub struct ExperimentsReport {
    pub window: &'static str,
    pub from: String,
    pub to: String,
    pub since: String,
    pub experiments: Vec<Experiment>,
}

#[derive(Debug, Serialize)]
pub struct Experiment {
    pub route: String,
    /// The route is in the config (else: arms seen before it was removed).
    pub in_config: bool,
    pub arms: Vec<ArmRow>,
    /// The cheapest arm per request, when at least two arms have requests.
    pub cheapest: Option<String>,
    /// Whether the cheapest arm's error rate is not significantly higher
    /// than any other arm's (two-proportion z-test, 95 %); `null` when
    /// not known.
    pub cheaper_at_equal_error_rate: Option<bool>,
    /// The comparison in words.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct ArmRow {
    pub arm: String,
    pub model: Option<String>,
    /// Share of new traffic the config gives it, in %.
    pub weight_pct: Option<f64>,
    pub in_config: bool,
    /// Charged requests and their cost in the window (the ledger: these
    /// survive restarts), as `/admin/usage` `by_arm`.
    pub requests: u64,
    pub cost_usd: f64,
    pub cost_per_request_usd: Option<f64>,
    pub savings_pct: Option<f64>,
    /// Answered by this process in the window: errors and latency.
    pub observed: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    #[serde(flatten)]
    pub latency: Latency,
    pub feedback: FeedbackRow,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FeedbackRow {
    pub ratings: u64,
    /// Mean of the ratings, 0–1 (thumbs up 1, down 0).
    pub mean_score: Option<f64>,
    pub up: u64,
    pub down: u64,
}

impl From<&Score> for FeedbackRow {
    fn from(s: &Score) -> Self {
        FeedbackRow { ratings: s.ratings, mean_score: (s.ratings > 0).then(|| (s.sum / s.ratings as f64 * 1e4).round() / 1e4), up: s.up, down: s.down }
    }
}

/// A split route to report and its arms.
struct Planned {
    route: String,
    arms: Vec<PlannedArm>,
    in_config: bool,
}

struct PlannedArm {
    name: String,
    model: Option<String>,
    weight_pct: Option<f64>,
}

impl Data {
    /// `usage` is `/admin/usage` for the same window (its `arms`).
    pub fn experiments(&self, w: Window, snap: &Snapshot, usage: &UsageReport, now: Timestamp, started: i64) -> ExperimentsReport {
        let (from, to) = window::bounds(w, &snap.timezone, now);
        let mut seen: BTreeMap<String, BTreeMap<String, ArmCell>> = BTreeMap::new();
        for d in self.buckets.days_in(from, to) {
            for (route, r) in &d.routes {
                for (arm, a) in &r.arms {
                    seen.entry(route.clone()).or_default().entry(arm.clone()).or_default().merge(a);
                }
            }
        }
        // Split routes of the config (every arm, with or without traffic),
        // then arms seen in the ledger or since the start that it no
        // longer names.
        let mut routes: Vec<Planned> = Vec::new();
        for r in &snap.routes {
            if let Target::Split(arms) = &r.target {
                let sum: f64 = arms.iter().map(|a| a.weight).sum();
                let arms = arms
                    .iter()
                    .map(|a| PlannedArm {
                        name: a.name.clone(),
                        model: Some(a.model.clone()),
                        weight_pct: (sum > 0.0).then(|| (a.weight / sum * 1e3).round() / 10.0),
                    })
                    .collect();
                routes.push(Planned { route: r.name.clone(), arms, in_config: true });
            }
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (route, arms) in
            usage.arms.iter().map(|(r, m)| (r, m.keys().cloned().collect::<Vec<_>>())).chain(seen.iter().map(|(r, m)| (r, m.keys().cloned().collect())))
        {
            extra.entry(route.clone()).or_default().extend(arms);
        }
        for (route, mut arms) in extra {
            arms.sort();
            arms.dedup();
            let unplanned = |name: String| PlannedArm { name, model: None, weight_pct: None };
            match routes.iter_mut().find(|p| p.route == route) {
                Some(p) => {
                    for a in arms {
                        if !p.arms.iter().any(|x| x.name == a) {
                            p.arms.push(unplanned(a));
                        }
                    }
                }
                None => routes.push(Planned { route, arms: arms.into_iter().map(unplanned).collect(), in_config: false }),
            }
        }
        let none = CellReport::default();
        let empty = ArmCell::default();
        let experiments = routes
            .into_iter()
            .map(|Planned { route, arms, in_config }| {
                let arms: Vec<ArmRow> = arms
                    .into_iter()
                    .map(|PlannedArm { name: arm, model, weight_pct }| {
                        let used = usage.arms.get(&route).and_then(|m| m.get(&arm)).unwrap_or(&none);
                        let cell = seen.get(&route).and_then(|m| m.get(&arm)).unwrap_or(&empty);
                        let t = TrafficRow::from(&cell.traffic);
                        ArmRow {
                            in_config: model.is_some(),
                            arm,
                            model,
                            weight_pct,
                            requests: used.requests,
                            cost_usd: used.cost_usd,
                            cost_per_request_usd: (used.requests > 0).then(|| (used.cost_usd / used.requests as f64 * 1e9).round() / 1e9),
                            savings_pct: (used.requests > 0 && used.requested_cost_usd > 0.0).then_some(used.savings_pct),
                            observed: t.observed,
                            errors: t.errors,
                            error_rate: t.error_rate,
                            latency: t.latency,
                            feedback: FeedbackRow::from(&cell.feedback),
                        }
                    })
                    .collect();
                let (cheapest, equal, verdict) = verdict(&arms);
                Experiment { route, in_config, arms, cheapest, cheaper_at_equal_error_rate: equal, verdict }
            })
            .collect();
        ExperimentsReport { window: w.as_str(), from: rfc3339(from), to: rfc3339(to), since: rfc3339(started), experiments }
    }
}

/// Money in words: cents and up with two decimals, less with four
/// significant digits.
fn dollars(v: f64) -> String {
    if v >= 1.0 {
        format!("${v:.2}")
    } else if v > 0.0 {
        let digits = (3 - v.log10().floor() as i32).clamp(2, 12) as usize;
        format!("${v:.digits$}")
    } else {
        "$0".to_string()
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// z of the difference of two error rates (a − b); `None` when either has
/// no requests or both rates are 0 % or 100 %.
fn z_score(a: &ArmRow, b: &ArmRow) -> Option<f64> {
    let (n1, n2) = (a.observed as f64, b.observed as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let p = (a.errors + b.errors) as f64 / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    (se > 0.0).then(|| (a.errors as f64 / n1 - b.errors as f64 / n2) / se)
}

/// Fewer answered requests than this per arm: say the comparison is early.
const FEW: u64 = 30;

/// The cheapest arm per request and how the others compare with it.
fn verdict(arms: &[ArmRow]) -> (Option<String>, Option<bool>, String) {
    let mut live: Vec<&ArmRow> = arms.iter().filter(|a| a.cost_per_request_usd.is_some()).collect();
    if live.len() < 2 {
        return (None, None, "Not enough traffic to compare yet: at least two arms need charged requests.".to_string());
    }
    live.sort_by(|a, b| a.cost_per_request_usd.partial_cmp(&b.cost_per_request_usd).unwrap_or(std::cmp::Ordering::Equal));
    let best = live[0];
    let mut equal = Some(true);
    let mut parts = Vec::new();
    for other in &live[1..] {
        let (c0, c1) = (best.cost_per_request_usd.unwrap_or(0.0), other.cost_per_request_usd.unwrap_or(0.0));
        let cost = if c1 > 0.0 && (c1 - c0) / c1 >= 0.005 {
            format!("{} costs {:.0}% less per request than {} ({} vs {})", best.arm, (c1 - c0) / c1 * 100.0, other.arm, dollars(c0), dollars(c1))
        } else {
            format!("{} and {} cost the same per request ({})", best.arm, other.arm, dollars(c0))
        };
        let errors = match z_score(best, other) {
            _ if best.observed == 0 || other.observed == 0 => {
                equal = None;
                "error rates are not known yet (no requests answered since the start)".to_string()
            }
            Some(z) if z > 1.96 => {
                equal = equal.map(|_| false);
                format!("but fails more often ({} vs {})", pct(best.error_rate), pct(other.error_rate))
            }
            Some(z) if z < -1.96 => format!("and fails less often ({} vs {})", pct(best.error_rate), pct(other.error_rate)),
            _ => format!("at an equal error rate ({} vs {})", pct(best.error_rate), pct(other.error_rate)),
        };
        let mut s = format!("{cost}, {errors}");
        if let (Some(q0), Some(q1)) = (best.feedback.mean_score, other.feedback.mean_score) {
            s.push_str(&format!("; quality {q0:.2} vs {q1:.2} ({} vs {} ratings)", best.feedback.ratings, other.feedback.ratings));
        }
        if best.observed.min(other.observed) < FEW {
            s.push_str(&format!(" — few requests so far ({} and {} answered): wait for more before deciding", best.observed, other.observed));
        }
        parts.push(s);
    }
    (Some(best.arm.clone()), equal, format!("{}.", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(name: &str, requests: u64, cost: f64, observed: u64, errors: u64) -> ArmRow {
        ArmRow {
            arm: name.into(),
            model: Some("m".into()),
            weight_pct: Some(50.0),
            in_config: true,
            requests,
            cost_usd: cost,
            cost_per_request_usd: (requests > 0).then(|| cost / requests as f64),
            savings_pct: None,
            observed,
            errors,
            error_rate: (observed > 0).then(|| errors as f64 / observed as f64),
            latency: Latency { p50_ms: None, p95_ms: None },
            feedback: FeedbackRow { ratings: 0, mean_score: None, up: 0, down: 0 },
        }
    }

    #[test]
    fn the_verdict_weighs_cost_against_errors() {
        let (c, eq, v) = verdict(&[arm("a", 100, 1.0, 100, 1), arm("b", 100, 4.0, 100, 2)]);
        assert_eq!(c.as_deref(), Some("a"));
        assert_eq!(eq, Some(true));
        assert!(v.starts_with("a costs 75% less per request than b ($0.01000 vs $0.04000), at an equal error rate (1.0% vs 2.0%)"), "{v}");
        let (_, eq, v) = verdict(&[arm("a", 200, 1.0, 200, 40), arm("b", 200, 4.0, 200, 2)]);
        assert_eq!(eq, Some(false));
        assert!(v.contains("but fails more often (20.0% vs 1.0%)"), "{v}");
        let (_, eq, v) = verdict(&[arm("a", 5, 1.0, 5, 0), arm("b", 5, 4.0, 0, 0)]);
        assert_eq!(eq, None);
        assert!(v.contains("not known yet"), "{v}");
        let (c, _, v) = verdict(&[arm("a", 0, 0.0, 0, 0), arm("b", 5, 4.0, 5, 0)]);
        assert_eq!(c, None);
        assert!(v.starts_with("Not enough traffic"), "{v}");
        let (_, _, v) = verdict(&[arm("a", 10, 1.0, 10, 0), arm("b", 10, 1.0, 10, 0)]);
        assert!(v.starts_with("a and b cost the same per request ($0.1000)") && v.contains("few requests so far"), "{v}");
    }

    #[test]
    fn money_reads_well() {
        assert_eq!(dollars(12.345), "$12.35");
        assert_eq!(dollars(0.0123), "$0.01230");
        assert_eq!(dollars(0.000345), "$0.0003450");
        assert_eq!(dollars(0.0), "$0");
    }
}
