//! Counts by hour (UTC hours, the last [`HOURS_KEPT`] with traffic) and by
//! calendar day in the config's `timezone` (the last [`DAYS_KEPT`]): per
//! model, and per day also per route and per split arm. One [`Sample`] is
//! one request — answered (from its access-log record: status and latency
//! known) or charged before this process started (from the ledger: cost
//! and tokens only).
//!
//! Maps are nested by name (provider → model, route → arm) and looked up
//! by `&str`, so counting a request allocates nothing once its names have
//! been seen in the bucket.
//!
//! It counts only: it must not read records, files or the config.

use std::collections::VecDeque;

use hashbrown::HashMap;

use jiff::tz::TimeZone;

use super::hist::Hist;
use crate::config::Window;

pub const HOURS_KEPT: usize = 48;
pub const DAYS_KEPT: usize = 35;

/// How an answered request went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Status ≥ 400, or an error (a stream that broke after a 200).
    pub error: bool,
    /// Its latency's histogram bucket (`hist::bucket`).
    pub latency: u8,
}

/// One request, as counted.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Unix seconds.
    pub at: i64,
    pub provider: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub arm: Option<&'a str>,
    /// `None`: from the ledger (how it went is not known).
    pub outcome: Option<Outcome>,
    pub nanos: u64,
    pub input: u64,
    pub output: u64,
    pub complexity: Option<u8>,
    pub shadow: Option<&'a str>,
    pub downgraded: bool,
}

/// Requests and how they went. `observed` are those whose status and
/// latency are known (answered by this process); error rates and
/// latencies are over those.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub requests: u64,
    pub observed: u64,
    pub errors: u64,
    pub latency: Hist,
}

impl Traffic {
    fn add(&mut self, o: Option<Outcome>) {
        self.requests += 1;
        if let Some(o) = o {
            self.observed += 1;
            self.errors += u64::from(o.error);
            self.latency.add_bucket(o.latency);
        }
    }

    pub fn merge(&mut self, t: &Traffic) {
        self.requests += t.requests;
        self.observed += t.observed;
        self.errors += t.errors;
        self.latency.merge(&t.latency);
    }

    /// Errors over observed requests (`None` before any).
    pub fn error_rate(&self) -> Option<f64> {
        (self.observed > 0).then(|| self.errors as f64 / self.observed as f64)
    }
}

/// One model's requests, cost and tokens.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub traffic: Traffic,
    pub nanos: u64,
    pub input: u64,
    pub output: u64,
}

impl Usage {
    fn add(&mut self, s: &Sample<'_>) {
        self.traffic.add(s.outcome);
        self.nanos += s.nanos;
        self.input += s.input;
        self.output += s.output;
    }

    pub fn merge(&mut self, u: &Usage) {
        self.traffic.merge(&u.traffic);
        self.nanos += u.nanos;
        self.input += u.input;
        self.output += u.output;
    }
}

/// What one route decided and how it went.
#[derive(Debug, Clone, Default)]
pub struct RouteCell {
    pub traffic: Traffic,
    /// Requests by the model that served (`none`: refused before a call).
    pub models: HashMap<String, u64>,
    /// Model calls by complexity score 0–10.
    pub complexity: [u64; 11],
    /// Shadow mode: requests by would-be model, then served model.
    pub shadow: HashMap<String, HashMap<String, u64>>,
    /// Requests a budget moved to a cheaper model.
    pub downgraded: u64,
    /// Split routes: by arm.
    pub arms: HashMap<String, ArmCell>,
}

impl RouteCell {
    pub fn merge(&mut self, r: &RouteCell) {
        self.traffic.merge(&r.traffic);
        add_counts(&mut self.models, &r.models);
        for (a, b) in self.complexity.iter_mut().zip(r.complexity) {
            *a += b;
        }
        for (would, served) in &r.shadow {
            add_counts(cell(&mut self.shadow, would), served);
        }
        self.downgraded += r.downgraded;
        for (k, a) in &r.arms {
            cell(&mut self.arms, k).merge(a);
        }
    }
}

/// Quality feedback: ratings, their sum (0–1 each), thumbs up and down.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub ratings: u64,
    pub sum: f64,
    pub up: u64,
    pub down: u64,
}

impl Score {
    pub fn merge(&mut self, s: &Score) {
        self.ratings += s.ratings;
        self.sum += s.sum;
        self.up += s.up;
        self.down += s.down;
    }

    /// Take `s` back out (a rating replaced by a newer one).
    pub fn remove(&mut self, s: &Score) {
        self.ratings = self.ratings.saturating_sub(s.ratings);
        self.sum = (self.sum - s.sum).max(0.0);
        self.up = self.up.saturating_sub(s.up);
        self.down = self.down.saturating_sub(s.down);
    }
}

/// One split arm's requests, cost and feedback.
#[derive(Debug, Clone, Default)]
pub struct ArmCell {
    pub traffic: Traffic,
    pub nanos: u64,
    pub feedback: Score,
}

impl ArmCell {
    pub fn merge(&mut self, a: &ArmCell) {
        self.traffic.merge(&a.traffic);
        self.nanos += a.nanos;
        self.feedback.merge(&a.feedback);
    }
}

fn add_counts(into: &mut HashMap<String, u64>, from: &HashMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Add one to `map[k]`, allocating the key only the first time.
fn bump(map: &mut HashMap<String, u64>, k: &str) {
    *map.entry_ref(k).or_default() += 1;
}

fn cell<'m, T: Default>(map: &'m mut HashMap<String, T>, k: &str) -> &'m mut T {
    map.entry_ref(k).or_default()
}

/// Per provider, per model.
pub type Models = HashMap<String, HashMap<String, Usage>>;

fn model_cell<'m>(m: &'m mut Models, provider: &str, model: &str) -> &'m mut Usage {
    cell(cell(m, provider), model)
}

/// Every (provider, model, usage) of `m`.
pub fn each_model(m: &Models) -> impl Iterator<Item = (&str, &str, &Usage)> {
    m.iter().flat_map(|(p, ms)| ms.iter().map(move |(n, u)| (p.as_str(), n.as_str(), u)))
}

fn merge_models(into: &mut Models, from: &Models) {
    for (p, m, u) in each_model(from) {
        model_cell(into, p, m).merge(u);
    }
}

/// One UTC hour.
#[derive(Debug, Clone, Default)]
pub struct Hour {
    pub start: i64,
    pub models: Models,
    pub traffic: Traffic,
}

/// One calendar day in the config's time zone.
#[derive(Debug, Clone, Default)]
pub struct Day {
    pub start: i64,
    pub end: i64,
    pub models: Models,
    pub traffic: Traffic,
    pub routes: HashMap<String, RouteCell>,
}

impl Day {
    /// A split arm's cell (made when new).
    pub fn arm(&mut self, route: &str, arm: &str) -> &mut ArmCell {
        cell(&mut cell(&mut self.routes, route).arms, arm)
    }
}

trait Slot: Default {
    fn start(&self) -> i64;
}

impl Slot for Hour {
    fn start(&self) -> i64 {
        self.start
    }
}

impl Slot for Day {
    fn start(&self) -> i64 {
        self.start
    }
}

/// The bucket starting at `start` (made in order if new); `None` when it
/// is older than every bucket kept and there is no room.
fn slot<T: Slot>(q: &mut VecDeque<T>, start: i64, keep: usize, make: impl FnOnce() -> T) -> Option<&mut T> {
    let pos = q.iter().rposition(|b| b.start() <= start);
    if let Some(i) = pos.filter(|&i| q[i].start() == start) {
        return q.get_mut(i);
    }
    let at = pos.map_or(0, |i| i + 1);
    if at == 0 && q.len() >= keep {
        return None;
    }
    q.insert(at, make());
    let mut at = at;
    while q.len() > keep {
        q.pop_front();
        at -= 1;
    }
    q.get_mut(at)
}

#[derive(Debug)]
pub struct Buckets {
    pub hours: VecDeque<Hour>,
    pub days: VecDeque<Day>,
    /// The zone of the day buckets and the last day looked up.
    zone: TimeZone,
    day_cache: Option<(i64, i64)>,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets { hours: VecDeque::new(), days: VecDeque::new(), zone: TimeZone::UTC, day_cache: None }
    }
}

impl Buckets {
    /// Count days in `tz` from now on (a reload may change it).
    pub fn set_zone(&mut self, tz: &TimeZone) {
        if self.zone != *tz {
            self.zone = tz.clone();
            self.day_cache = None;
        }
    }

    fn day_bounds(&mut self, at: i64) -> (i64, i64) {
        if let Some((s, e)) = self.day_cache.filter(|(s, e)| (*s..*e).contains(&at)) {
            return (s, e);
        }
        let ts = jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let (s, e) = crate::budget::window::bounds(Window::Day, &self.zone, ts);
        self.day_cache = Some((s, e));
        (s, e)
    }

    pub fn add(&mut self, s: &Sample<'_>) {
        let hour = s.at - s.at.rem_euclid(3600);
        if let Some(h) = slot(&mut self.hours, hour, HOURS_KEPT, || Hour { start: hour, ..Hour::default() }) {
            model_cell(&mut h.models, s.provider, s.model).add(s);
            h.traffic.add(s.outcome);
        }
        let (start, end) = self.day_bounds(s.at);
        let Some(d) = slot(&mut self.days, start, DAYS_KEPT, || Day { start, end, ..Day::default() }) else { return };
        model_cell(&mut d.models, s.provider, s.model).add(s);
        d.traffic.add(s.outcome);
        let r = cell(&mut d.routes, s.route);
        r.traffic.add(s.outcome);
        bump(&mut r.models, s.model);
        if let Some(c) = s.complexity {
            r.complexity[usize::from(c.min(10))] += 1;
        }
        if let Some(would) = s.shadow {
            bump(cell(&mut r.shadow, would), s.model);
        }
        r.downgraded += u64::from(s.downgraded);
        if let Some(arm) = s.arm {
            let a = cell(&mut r.arms, arm);
            a.traffic.add(s.outcome);
            a.nanos += s.nanos;
        }
    }

    /// The day bucket holding `at` (for feedback on a request of that day).
    pub fn day_of(&mut self, at: i64) -> Option<&mut Day> {
        let (start, end) = self.day_bounds(at);
        slot(&mut self.days, start, DAYS_KEPT, || Day { start, end, ..Day::default() })
    }

    /// Add `other`'s counts (the ledger's, read in the background at start).
    pub fn merge(&mut self, other: Buckets) {
        for h in other.hours {
            if let Some(mine) = slot(&mut self.hours, h.start, HOURS_KEPT, Hour::default) {
                mine.start = h.start;
                merge_models(&mut mine.models, &h.models);
                mine.traffic.merge(&h.traffic);
            }
        }
        for d in other.days {
            if let Some(mine) = slot(&mut self.days, d.start, DAYS_KEPT, Day::default) {
                (mine.start, mine.end) = (d.start, d.end);
                merge_models(&mut mine.models, &d.models);
                mine.traffic.merge(&d.traffic);
                for (k, r) in &d.routes {
                    cell(&mut mine.routes, k).merge(r);
                }
            }
        }
    }

    /// The days that start in `[from, to)`.
    pub fn days_in(&self, from: i64, to: i64) -> impl Iterator<Item = &Day> {
        self.days.iter().filter(move |d| (from..to).contains(&d.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, model: &str, error: bool, ms: f64) -> Sample<'static> {
        let model: &'static str = Box::leak(model.to_string().into_boxed_str());
        Sample {
            at,
            provider: "openai",
            model,
            route: "r",
            arm: Some("a"),
            outcome: Some(Outcome { error, latency: crate::stats::hist::bucket(ms) }),
            nanos: 1_000,
            input: 10,
            output: 5,
            complexity: Some(4),
            shadow: None,
            downgraded: false,
        }
    }

    #[test]
    fn samples_land_in_their_hour_and_day_and_old_buckets_go() {
        let mut b = Buckets::default();
        b.set_zone(&TimeZone::UTC);
        let t0 = 1_790_000_000 - 1_790_000_000 % 86_400; // a UTC midnight
        b.add(&sample(t0 + 10, "m", false, 5.0));
        b.add(&sample(t0 + 20, "m", true, 50.0));
        b.add(&sample(t0 + 3_700, "n", false, 5.0));
        assert_eq!(b.hours.len(), 2);
        assert_eq!(b.days.len(), 1);
        let d = &mut b.days[0];
        assert_eq!((d.start, d.end), (t0, t0 + 86_400));
        assert_eq!(d.traffic.requests, 3);
        assert_eq!(d.traffic.errors, 1);
        assert_eq!(d.routes["r"].complexity[4], 3);
        assert_eq!(d.arm("r", "a").nanos, 3_000);
        assert_eq!(d.models["openai"]["m"].traffic.requests, 2);
        // An hour older than everything kept, with the deque full, is dropped.
        for h in 1..=HOURS_KEPT as i64 {
            b.add(&sample(t0 + h * 3_600, "m", false, 1.0));
        }
        assert_eq!(b.hours.len(), HOURS_KEPT);
        b.add(&sample(t0 - 7 * 86_400, "m", false, 1.0));
        assert_eq!(b.hours.len(), HOURS_KEPT);
        assert!(b.hours.iter().all(|h| h.start >= t0));
        // Days stay in order when an older one arrives late (the ledger's).
        assert_eq!(b.days.front().unwrap().start, t0 - 7 * 86_400);
        let mut seed = Buckets::default();
        seed.add(&Sample { outcome: None, ..sample(t0 - 86_400, "m", false, 0.0) });
        b.merge(seed);
        let starts: Vec<i64> = b.days.iter().map(|d| d.start).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted);
        let yesterday = b.days.iter().find(|d| d.start == t0 - 86_400).unwrap();
        assert_eq!((yesterday.traffic.requests, yesterday.traffic.observed), (1, 0));
        assert_eq!(yesterday.traffic.error_rate(), None);
        // Another zone: the next day counts in its own calendar.
        b.set_zone(&TimeZone::get("America/New_York").unwrap());
        b.add(&sample(t0 + 86_400 + 6 * 3_600, "m", false, 1.0));
        let ny = b.days.iter().find(|d| d.start == t0 + 86_400 + 4 * 3_600).expect("a day from midnight in New York (EDT in September)");
        assert_eq!(ny.traffic.requests, 1);
    }
}
