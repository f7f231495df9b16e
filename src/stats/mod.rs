//! What the dashboard shows beyond budgets and usage: the last requests'
//! metadata, hourly and daily counts by model, route and split arm
//! (requests, errors, latency, cost), and quality feedback per arm.
//!
//! The request path only hands over its access-log record ([`observe`]):
//! the record moves into a pending batch under a short lock — no copy, no
//! allocation once the batch has grown — and a background thread (or the
//! next admin call) counts the batch and keeps the records in the ring.
//! Counts since the start are in memory; at start a background read of the
//! ledger (cost, tokens, route and arm of every charged request) and of the
//! feedback files fills the days and hours before it, so charts and arm
//! costs survive a restart (how those earlier requests went — status,
//! latency — is not in the ledger).
//!
//! Layout: `recent` (the ring and its filters), `buckets` (hour and day
//! counts), `hist` (latency quantiles), `feedback` (which requests may be
//! rated, ratings on disk), `report` (the JSON the admin API answers).

pub mod buckets;
pub mod feedback;
pub mod hist;
pub mod recent;
pub mod report;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;

use crate::accesslog::Record;
use crate::budget::amount::nanos;
use crate::budget::Ledger;
use crate::config::Snapshot;
use crate::request_id::RequestId;
use buckets::{Buckets, Outcome, Sample};
use feedback::{Given, Index};
use recent::Recent;

/// Records waiting to be counted are dropped (and counted as dropped)
/// beyond this many: the counting thread is far behind.
const MAX_PENDING: usize = 50_000;
/// The counting thread waits this long after the first record of a batch.
const BATCH_AFTER: Duration = Duration::from_millis(200);

pub struct Stats {
    pending: Mutex<Pending>,
    wake: Condvar,
    data: Mutex<Data>,
    state: Arc<ArcSwap<Snapshot>>,
    /// When this process started (to the millisecond, as the ledger
    /// writes times): ledger entries and ratings before it are read from
    /// disk, those after come live.
    started: Timestamp,
}

#[derive(Default)]
struct Pending {
    batch: Vec<Record>,
    dropped: u64,
    counter: bool,
}

/// Everything counted, under one lock.
pub struct Data {
    pub recent: Recent,
    pub buckets: Buckets,
    pub index: Index,
    /// The pending batch's storage, handed back and forth.
    spare: Vec<Record>,
    /// Records never counted (the pending batch was full).
    pub dropped: u64,
    /// The ledger and feedback files before the start have been read.
    pub seeded: bool,
}

static STATS: OnceLock<Stats> = OnceLock::new();

/// Start counting for the process (once): the dashboard's endpoints read
/// [`get`]; the ledger and ratings before now are read in the background.
pub fn init(state: Arc<ArcSwap<Snapshot>>) -> &'static Stats {
    let started = Timestamp::now();
    let mut fresh = false;
    let stats = STATS.get_or_init(|| {
        fresh = true;
        Stats::new(state, started)
    });
    if fresh {
        let spawned = std::thread::Builder::new().name("stats-seed".into()).spawn(move || stats.seed());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot read the ledger for the dashboard's history; it starts empty");
            stats.lock().seeded = true;
        }
    }
    stats
}

/// The process's counts, once [`init`] ran.
pub fn get() -> Option<&'static Stats> {
    STATS.get()
}

/// Hand a finished request's record to the dashboard (from the access-log
/// step of the request path). Cheap: a short lock and a move.
pub fn observe(rec: Record) {
    let Some(s) = STATS.get() else { return };
    let Ok(mut p) = s.pending.lock() else { return };
    if p.batch.len() >= MAX_PENDING {
        p.dropped += 1;
        return;
    }
    let was_empty = p.batch.is_empty();
    p.batch.push(rec);
    if was_empty {
        if !p.counter {
            p.counter = std::thread::Builder::new().name("stats".into()).spawn(move || s.counter()).is_ok();
        }
        s.wake.notify_one();
    }
}

/// Why feedback was not taken.
#[derive(Debug, PartialEq)]
pub enum FeedbackError {
    /// Not a split request this process remembers.
    Unknown,
    /// The ledger is still being read at start.
    NotReady,
    /// Saving it failed.
    Store(String),
}

/// What a rating was counted as.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedbackAck {
    pub request_id: RequestId,
    pub route: String,
    pub arm: String,
    pub model: String,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbs: Option<&'static str>,
    /// It replaced an earlier rating of the same request.
    pub replaced: bool,
}

impl Stats {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, started: Timestamp) -> Stats {
        let started = Timestamp::from_millisecond(started.as_millisecond()).unwrap_or(started);
        Stats {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            data: Mutex::new(Data {
                recent: Recent::default(),
                buckets: Buckets::default(),
                index: Index::default(),
                spare: Vec::new(),
                dropped: 0,
                seeded: false,
            }),
            state,
            started,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counting thread: sleeps while nothing is pending, gives a batch
    /// [`BATCH_AFTER`] to fill, counts it.
    fn counter(&self) {
        loop {
            let Ok(p) = self.pending.lock() else { return };
            let Ok(p) = self.wake.wait_while(p, |p| p.batch.is_empty()) else { return };
            drop(p);
            std::thread::sleep(BATCH_AFTER);
            drop(self.catch_up());
        }
    }

    /// Count what is pending and return the counts, locked.
    pub fn catch_up(&self) -> MutexGuard<'_, Data> {
        let mut data = self.lock();
        let snap = self.state.load();
        let mut batch = std::mem::take(&mut data.spare);
        if let Ok(mut p) = self.pending.lock() {
            std::mem::swap(&mut p.batch, &mut batch);
            data.dropped += std::mem::take(&mut p.dropped);
        }
        // A batch counts at the time it is counted: at most BATCH_AFTER
        // after its requests ended (no time to parse per record).
        let now = Timestamp::now().as_second();
        data.buckets.set_zone(&snap.timezone);
        for rec in batch.drain(..) {
            data.add(rec, &snap, now);
        }
        // A burst's storage is not kept forever.
        batch.shrink_to(4096);
        data.spare = batch;
        data
    }

    /// When this process started (Unix seconds).
    pub fn started(&self) -> i64 {
        self.started.as_second()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Read the ledger and ratings from before the start into the counts.
    fn seed(&self) {
        let snap = self.state.load_full();
        let tz = snap.timezone.clone();
        let since = self.started.as_second() - (buckets::DAYS_KEPT as i64 + 1) * 86_400;
        let mut b = Buckets::default();
        b.set_zone(&tz);
        let mut split = Vec::new();
        let scan = Ledger::new(&snap.state_dir, false).scan_since(since, |e, at| {
            if at >= self.started {
                return;
            }
            let at = at.as_second();
            let sample = Sample {
                at,
                provider: &e.provider,
                model: &e.model,
                route: &e.route,
                arm: e.arm.as_deref(),
                outcome: None,
                nanos: nanos(e.cost_usd),
                input: e.input + e.cached + e.cache_write,
                output: e.output,
                complexity: None,
                shadow: None,
                downgraded: e.downgraded_by.is_some(),
            };
            b.add(&sample);
            if let (Some(arm), Some(id)) = (&e.arm, e.request_id) {
                split.push((id, e.route.clone(), arm.clone(), e.model.clone(), at, None));
            }
        });
        let ratings = feedback::read(&snap.state_dir, since, self.started);
        for (id, _, _, _, _, given) in split.iter_mut() {
            *given = ratings.get(&id.0).and_then(feedback::Line::given);
        }
        let mut data = self.lock();
        data.buckets.set_zone(&tz);
        data.buckets.merge(b);
        for l in ratings.values() {
            let (Some(g), Ok(at)) = (l.given(), l.request_ts.parse::<Timestamp>()) else { continue };
            if let Some(day) = data.buckets.day_of(at.as_second()) {
                day.arm(&l.route, &l.arm).feedback.merge(&g.score());
            }
        }
        let cap = self.state.load().dashboard.feedback_requests;
        data.index.seed(split, cap);
        data.seeded = true;
        tracing::debug!(entries = scan.entries, ratings = ratings.len(), "dashboard history read from the ledger");
    }

    /// Rate a split request (`POST /admin/feedback`).
    pub fn feedback(&self, id: RequestId, given: Given, state_dir: &std::path::Path) -> Result<FeedbackAck, FeedbackError> {
        let mut data = self.catch_up();
        let Some(r) = data.index.get_mut(id) else {
            return Err(if data.seeded { FeedbackError::Unknown } else { FeedbackError::NotReady });
        };
        let r = r.clone();
        let now = Timestamp::now();
        let line = feedback::Line {
            ts: now.to_string(),
            request_id: id,
            request_ts: Timestamp::from_second(r.at).map(|t| t.to_string()).unwrap_or_default(),
            route: r.route.to_string(),
            arm: r.arm.to_string(),
            model: r.model.to_string(),
            score: match given {
                Given::Score(s) => Some(s),
                Given::Thumbs(_) => None,
            },
            thumbs: match given {
                Given::Thumbs(up) => Some(if up { "up" } else { "down" }.to_string()),
                Given::Score(_) => None,
            },
        };
        feedback::append(state_dir, now, &line).map_err(|e| FeedbackError::Store(format!("cannot save the rating in {}: {e}", state_dir.display())))?;
        if let Some(day) = data.buckets.day_of(r.at) {
            let cell = day.arm(&r.route, &r.arm);
            if let Some(old) = r.given {
                cell.feedback.remove(&old.score());
            }
            cell.feedback.merge(&given.score());
        }
        if let Some(entry) = data.index.get_mut(id) {
            entry.given = Some(given);
        }
        let score = given.score();
        Ok(FeedbackAck {
            request_id: id,
            route: line.route,
            arm: line.arm,
            model: line.model,
            score: score.sum,
            thumbs: match given {
                Given::Thumbs(true) => Some("up"),
                Given::Thumbs(false) => Some("down"),
                Given::Score(_) => None,
            },
            replaced: r.given.is_some(),
        })
    }
}

impl Data {
    /// Count `rec` as answered at `at` (Unix seconds) and keep it.
    fn add(&mut self, rec: Record, snap: &Snapshot, at: i64) {
        // The labels of `modelgate_requests_total`: `other` served by a
        // provider as an unconfigured model, `none` never sent.
        let provider = rec.provider.as_deref().unwrap_or("none");
        let model = rec.model.as_deref().unwrap_or(if rec.provider.is_some() { "other" } else { "none" });
        let sample = Sample {
            at,
            provider,
            model,
            route: &rec.route,
            arm: rec.arm.as_deref(),
            outcome: Some(Outcome { error: rec.status >= 400 || rec.error.is_some(), latency: hist::bucket(rec.duration_ms) }),
            nanos: nanos(rec.cost_usd.unwrap_or(0.0)),
            input: rec.input_tokens + rec.cached_input_tokens + rec.cache_write_tokens,
            output: rec.output_tokens,
            complexity: rec.complexity,
            shadow: rec.shadow_model.as_deref(),
            downgraded: rec.downgraded_by.is_some(),
        };
        self.buckets.add(&sample);
        if let Some(arm) = rec.arm.as_deref() {
            self.index.remember(rec.request_id, &rec.route, arm, model, at, snap.dashboard.feedback_requests);
        }
        self.recent.push(rec, snap.dashboard.recent_requests);
    }
}

#[cfg(test)]
mod tests;
