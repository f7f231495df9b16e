//! Counting records end to end: the pending batch, the ring, the reports,
//! ratings and the ledger read at start.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;

use super::buckets::Score;
use super::*;
use crate::config::Window;
use crate::test_config::{Config, Kind};

fn snapshot(dir: &std::path::Path, extra: &str) -> Snapshot {
    let yaml = Config::new()
        .raw(&format!("state_dir: {}\n{extra}", dir.display()))
        .provider("openai", Kind::OpenAi, "http://127.0.0.1:9")
        .model("a-model", "openai")
        .prices(1.0, 1.0)
        .model("b-model", "openai")
        .prices(2.0, 2.0)
        .route("name: ab, match: { app: exp }, split: [ { model: a-model, weight: 1, name: cheap }, { model: b-model, weight: 1, name: dear } ]")
        .route("name: tiers, match: { app: t }, tiers: [ { max_complexity: 3, model: a-model }, { max_complexity: 10, model: b-model } ]")
        .build();
    crate::config::load_str(&yaml, &|_| None).unwrap()
}

fn rec(now: Timestamp, route: &str, arm: Option<&str>, model: &str, status: u16, ms: f64, cost: f64) -> Record {
    Record {
        ts: now.to_string(),
        request_id: RequestId::next(),
        app: "exp".into(),
        route: route.into(),
        arm: arm.map(str::to_string),
        model: Some(model.into()),
        provider: Some("openai".into()),
        status,
        duration_ms: ms,
        cost_usd: Some(cost),
        complexity: Some(2),
        input_tokens: 100,
        output_tokens: 10,
        ..Record::default()
    }
}

fn stats(snap: Snapshot) -> Stats {
    Stats::new(Arc::new(ArcSwap::from_pointee(snap)), Timestamp::now() - jiff::SignedDuration::from_secs(1))
}

/// Hand a record over as the request path does, to this instance.
fn hand_over(s: &Stats, r: Record) {
    s.pending.lock().unwrap().batch.push(r);
}

#[test]
fn records_are_counted_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = stats(snapshot(dir.path(), "dashboard: { recent_requests: 3 }\n"));
    let now = Timestamp::now();
    for i in 0..4 {
        hand_over(&s, rec(now, "ab", Some("cheap"), "a-model", 200, 10.0 + f64::from(i), 0.001));
    }
    hand_over(&s, rec(now, "ab", Some("dear"), "b-model", 502, 100.0, 0.0));
    hand_over(&s, rec(now, "tiers", None, "b-model", 200, 20.0, 0.004));
    let data = s.catch_up();
    let snap = s.snapshot();
    let recent = data.recent.query(&recent::Filter::default(), 3);
    assert_eq!((recent.kept, recent.seen), (3, 6));
    assert_eq!(recent.requests[0].route, "tiers");

    let t = data.traffic(Window::Day, &snap, now, s.started());
    assert_eq!((t.total.requests, t.total.errors), (6, 1));
    let ab = t.routes.iter().find(|r| r.route == "ab").unwrap();
    assert_eq!(ab.kind, "split");
    assert_eq!(ab.models[0].model, "a-model");
    assert_eq!(ab.complexity[2], 5);
    let tiers = t.routes.iter().find(|r| r.route == "tiers").unwrap();
    let hit: Vec<u64> = tiers.tiers.as_ref().unwrap().iter().map(|t| t.requests).collect();
    assert_eq!(hit, vec![1, 0], "complexity 2 is the first tier's");

    let series = data.series(Window::Hour, &snap, now, s.started());
    assert_eq!(series.t.len(), report::SERIES_HOURS);
    assert_eq!(*series.total.requests.last().unwrap(), 6);
    assert!((series.total.cost_usd.last().unwrap() - 0.008).abs() < 1e-12);
    let days = data.series(Window::Day, &snap, now, s.started());
    assert_eq!(days.t.len(), report::SERIES_DAYS);
    assert_eq!(*days.total.requests.last().unwrap(), 6);
    assert!(days.models.iter().any(|m| m.model == "b-model" && *m.errors.last().unwrap() == 1));
}

#[test]
fn ratings_count_per_arm_replace_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path(), "");
    let state_dir = snap.state_dir.clone();
    let s = stats(snap);
    s.lock().seeded = true;
    let now = Timestamp::now();
    let r = rec(now, "ab", Some("cheap"), "a-model", 200, 10.0, 0.001);
    let id = r.request_id;
    hand_over(&s, r);
    let plain = rec(now, "tiers", None, "a-model", 200, 10.0, 0.001);
    let plain_id = plain.request_id;
    hand_over(&s, plain);

    assert_eq!(s.feedback(plain_id, Given::Score(1.0), &state_dir).unwrap_err(), FeedbackError::Unknown);
    let ack = s.feedback(id, Given::Thumbs(false), &state_dir).unwrap();
    assert_eq!((ack.arm.as_str(), ack.score, ack.replaced), ("cheap", 0.0, false));
    let ack = s.feedback(id, Given::Score(0.75), &state_dir).unwrap();
    assert!(ack.replaced);
    let cell = |d: &Data| d.buckets.days.back().unwrap().routes["ab"].arms["cheap"].feedback;
    assert_eq!(cell(&s.lock()), Score { ratings: 1, sum: 0.75, up: 0, down: 0 });

    // A new process reads the rating back (and may still rate the request,
    // which the ledger names).
    let usage_line = crate::budget::Entry {
        ts: now.to_string(),
        app: "exp".into(),
        route: "ab".into(),
        provider: "openai".into(),
        model: "a-model".into(),
        cost_usd: 0.001,
        requested_cost_usd: 0.001,
        arm: Some("cheap".into()),
        request_id: Some(id),
        ..Default::default()
    };
    let ledger = crate::budget::Ledger::new(&state_dir, true);
    ledger.append(&mut ledger.lock(), &usage_line, now).unwrap();
    // The new process starts after the entry (Stats keeps milliseconds:
    // within the same one the entry would count as after the start, and
    // come live instead of from the ledger).
    let restart = Timestamp::now().max(now + jiff::SignedDuration::from_millis(2));
    let later = Stats::new(Arc::new(ArcSwap::from_pointee(snapshot(dir.path(), ""))), restart);
    assert_eq!(later.feedback(id, Given::Score(1.0), &state_dir).unwrap_err(), FeedbackError::NotReady);
    later.seed();
    {
        let d = later.lock();
        assert_eq!(cell(&d), Score { ratings: 1, sum: 0.75, up: 0, down: 0 });
        let arms = &d.buckets.days.back().unwrap().routes["ab"].arms["cheap"];
        assert_eq!((arms.traffic.requests, arms.traffic.observed, arms.nanos), (1, 0, 1_000_000));
    }
    let ack = later.feedback(id, Given::Thumbs(true), &state_dir).unwrap();
    assert!(ack.replaced);
    assert_eq!(cell(&later.lock()), Score { ratings: 1, sum: 1.0, up: 1, down: 0 });
}
