//! Budget unit tests: judging, concurrent admission, ledger replay,
//! spikes, config mistakes, the injected clock, the internal recount and
//! the report JSON. Time moves on a `ManualClock`; nothing sleeps.

use super::admit::{judge, Judged, Seen};
use super::amount::{nanos, Limits};
use super::spike::SpikeWatch;
use super::*;
use crate::config::{Budget, Downgrade, OnExceed, Scope, Spike, Window};
use crate::test_config::{Config, Kind};
use jiff::Timestamp;

fn budget(name: &str, usd_limit: f64, on_exceed: OnExceed) -> Budget {
    Budget {
        name: name.into(),
        scope: Scope::default(),
        window: Window::Day,
        limits: Limits { nanos: Some(nanos(usd_limit)), ..Default::default() },
        warn_at: 0.8,
        on_exceed,
        per_user: None,
    }
}

fn seen(i: usize, spent: u64, reserved: u64) -> Seen {
    Seen { i, spent: Amounts { nanos: spent, ..Default::default() }, reserved: Amounts { nanos: reserved, ..Default::default() }, end: 0 }
}

#[test]
fn judge_counts_reservations_and_prefers_downgrade_then_reject() {
    let defs = vec![budget("hard", 1.0, OnExceed::Reject), budget("soft", 0.5, OnExceed::Downgrade(Downgrade::Cheapest)), budget("note", 0.1, OnExceed::Warn)];
    let worst = Amounts { nanos: nanos(0.2), tokens: 0, requests: 1 };
    // 0.7 spent + 0.2 reserved + 0.2 > 1.0: over the hard cap.
    assert!(matches!(judge(&defs[..1], &[seen(0, nanos(0.7), nanos(0.2))], worst, false, false), Judged::Refuse { i: 0, what: Limit::Usd, .. }));
    assert!(matches!(judge(&defs[..1], &[seen(0, nanos(0.5), nanos(0.2))], worst, false, false), Judged::Go { .. }));
    // The soft cap downgrades first; once downgraded it no longer blocks.
    let all = [seen(0, nanos(0.7), nanos(0.2)), seen(1, nanos(0.4), 0), seen(2, nanos(0.4), 0)];
    assert!(matches!(judge(&defs, &all, worst, false, false), Judged::Downgrade(1)));
    assert!(matches!(judge(&defs, &all, worst, true, false), Judged::Refuse { i: 0, .. }));
    match judge(&defs, &[seen(1, nanos(0.4), 0), seen(2, nanos(0.4), 0)], worst, true, false) {
        Judged::Go { over_warn_only } => assert_eq!(over_warn_only, vec![1, 2]),
        _ => panic!("a downgraded request passes soft and warn budgets"),
    }
}

/// Provider `openai` and model `m` ($1 per million tokens each way), with
/// `extra` top-level YAML (the `budgets:` section and anything else).
fn config(extra: &str) -> String {
    Config::new().raw(extra).provider("openai", Kind::OpenAi, "http://127.0.0.1:9").model("m", "openai").prices(1.0, 1.0).build()
}

fn snapshot(dir: &std::path::Path, budgets: &str) -> Snapshot {
    let yaml = config(&format!("state_dir: {}\nbudgets:\n{budgets}", dir.display()));
    crate::config::load_str(&yaml, &|_| None).unwrap()
}

const CHARGE: Charge<'static> = Charge { provider: "openai", model: Some("m"), app: "default", task: None, key: None, user: None };

fn worst(usd: f64) -> Amounts {
    Amounts { nanos: nanos(usd), tokens: 10, requests: 1 }
}

fn entry(ts: String, cost: f64) -> Entry {
    Entry {
        ts,
        app: "default".into(),
        route: "none".into(),
        provider: "openai".into(),
        model: "m".into(),
        input: 5,
        output: 5,
        cost_usd: cost,
        requested_cost_usd: cost,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admission_never_reserves_past_the_limit_and_holds_release() {
    let dir = tempfile::tempdir().unwrap();
    let b = Budgets::open(&snapshot(dir.path(), "  - { name: cap, window: day, limit_usd: 1 }\n")).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            match b.admit(&CHARGE, &worst(0.1), false).await {
                Verdict::Go(h) => {
                    tokio::task::yield_now().await;
                    let e = entry(h.admitted_at(), 0.1);
                    b.settle(h, charged(&e), &e).await;
                    true
                }
                _ => false,
            }
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10, "exactly limit / worst case requests fit");
    let r = serde_json::to_value(b.report().await).unwrap();
    assert_eq!(r["budgets"][0]["spent_usd"], 1.0);
    assert_eq!(r["budgets"][0]["reserved_usd"], 0.0);
    assert_eq!(r["budgets"][0]["state"], "exceeded");
    // A dropped hold (an error path) gives its reservation back.
    let b2 = Budgets::open(&snapshot(tempfile::tempdir().unwrap().path(), "  - { name: cap, window: day, limit_usd: 1 }\n")).unwrap();
    let Verdict::Go(h) = b2.admit(&CHARGE, &worst(0.6), false).await else { panic!() };
    assert!(matches!(b2.admit(&CHARGE, &worst(0.6), false).await, Verdict::Refuse(_)));
    drop(h);
    assert!(matches!(b2.admit(&CHARGE, &worst(0.6), false).await, Verdict::Go(_)));
}

#[tokio::test]
async fn spend_is_replayed_from_the_ledger_and_survives_scope_changes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(clock::ManualClock::at("2026-11-25T12:00:00Z".parse().unwrap()));
    let snap = snapshot(dir.path(), "  - { name: day, window: day, limit_usd: 5 }\n");
    let b = Budgets::open_with_clock(&snap, clock.clone()).unwrap();
    for _ in 0..3 {
        let Verdict::Go(h) = b.admit(&CHARGE, &worst(0.5), false).await else { panic!() };
        let e = entry(h.admitted_at(), 0.25);
        b.settle(h, charged(&e), &e).await;
    }
    // Yesterday's entry counts in the month, not the day.
    {
        let e = entry((clock.now() - jiff::SignedDuration::from_hours(48)).to_string(), 1.0);
        let mut g = b.inner.ledger.lock();
        b.inner.ledger.append(&mut g, &e, clock.now()).unwrap();
    }
    drop(b);
    let again = Budgets::open_with_clock(&snap, clock).unwrap();
    assert_eq!(serde_json::to_value(again.report().await).unwrap()["budgets"][0]["spent_usd"], 0.75);
    // A new budget added by a reload counts what is already in the ledger.
    again.sync(&snapshot(dir.path(), "  - { name: day, window: day, limit_usd: 2 }\n  - { name: app, scope: { app: default }, window: day, limit_usd: 9 }\n"));
    let r = serde_json::to_value(again.report().await).unwrap();
    assert_eq!((r["budgets"][0]["spent_usd"].as_f64(), r["budgets"][0]["limit_usd"].as_f64()), (Some(0.75), Some(2.0)));
    assert_eq!(r["budgets"][1]["spent_usd"], 0.75);
    let day = serde_json::to_value(again.usage(Window::Day)).unwrap();
    assert_eq!(day["total"]["requests"], 3);
}

#[test]
fn a_spend_spike_is_the_last_hour_over_factor_times_the_baseline_hour() {
    let mut book = SpikeWatch { config: Spike { factor: 2.0, baseline_hours: 24, min_usd: 0.0 }, ..Default::default() };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let minute = now.as_second() / 60;
    // $1 an hour for the 24 hours before the last one.
    for h in 1..=24 {
        *book.minutes.entry(minute - 60 * h - 30).or_default() += nanos(1.0);
    }
    *book.minutes.entry(minute - 5).or_default() += nanos(1.5);
    book.check(now);
    assert!(!book.spiking, "1.5× is not a spike at factor 2");
    *book.minutes.entry(minute - 1).or_default() += nanos(1.0);
    book.check(now);
    assert!(!book.spiking, "checked at most once a minute");
    book.check(Timestamp::from_second(now.as_second() + 60).unwrap());
    assert!(book.spiking, "$2.50 in the last hour vs $1 average is a spike");
    // No history: no alert (a first hour is not a spike).
    let mut fresh = SpikeWatch { config: Spike::default(), ..Default::default() };
    *fresh.minutes.entry(minute).or_default() += nanos(5.0);
    fresh.check(now);
    assert!(!fresh.spiking);
}

#[test]
fn budget_config_mistakes_are_named_with_their_path() {
    let bad = |budgets: &str, extra: &str| -> Vec<String> {
        crate::config::load_str(&config(&format!("{extra}budgets:\n{budgets}")), &|_| None).err().unwrap_or_default().iter().map(|e| e.to_string()).collect()
    };
    let e = bad("  - { name: a, window: fortnight, limit_usd: 1 }\n  - { name: a, window: day }\n", "");
    assert!(e.iter().any(|e| e.starts_with("budgets[0].window: unknown window `fortnight`")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("budgets[1].name: budget name `a` is used twice")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("budgets[1]: a budget needs a limit")), "{e:?}");
    let e = bad("  - { name: a, window: day, limit_usd: -1, on_exceed: downgrade }\n", "");
    assert!(e.iter().any(|e| e.starts_with("budgets[0].limit_usd: must be a positive amount")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("budgets[0].downgrade_to: on_exceed: downgrade needs `downgrade_to`")), "{e:?}");
    let e = bad("  - { name: a, scope: { provider: nope, model: m }, window: day, limit_usd: 1, on_exceed: downgrade, downgrade_to: m }\n", "");
    assert!(e.iter().any(|e| e.starts_with("budgets[0].scope.provider: unknown provider `nope`")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("budgets[0].downgrade_to: this budget counts model `m` only")), "{e:?}");
    let e = bad("  - { name: a, window: day, limit_usd: 1 }\n", "timezone: Mars/Olympus\nbudget_store: { kind: redis, url: \"localhost:6379\" }\n");
    assert!(e.iter().any(|e| e.starts_with("timezone: unknown time zone `Mars/Olympus`")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("budget_store.url: `localhost:6379` is not a Redis URL")), "{e:?}");
    let e = bad("  - { name: a, window: day, limit_usd: 1 }\n", "budget_store: { on_ledger_error: ignore }\n");
    assert!(e.iter().any(|e| e.starts_with("budget_store.on_ledger_error: unknown choice `ignore`; expected refuse")), "{e:?}");
    // `kind` defaults to file; the policy defaults to refuse.
    let openai = |extra: &str| Config::new().raw(extra).provider("openai", Kind::OpenAi, "http://127.0.0.1:9").build();
    let yaml = openai("budget_store: { on_ledger_error: reset }\n");
    assert_eq!(crate::config::load_str(&yaml, &|_| None).unwrap().budget_store.on_ledger_error, OnLedgerError::Reset);
    assert_eq!(crate::config::load_str(&openai(""), &|_| None).unwrap().budget_store.on_ledger_error, OnLedgerError::Refuse);
}

#[tokio::test]
async fn windows_roll_on_the_injected_clock_without_sleeping() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(clock::ManualClock::at("2026-11-25T23:59:00Z".parse().unwrap()));
    let b = Budgets::open_with_clock(&snapshot(dir.path(), "  - { name: cap, window: day, limit_usd: 1 }\n"), clock.clone()).unwrap();
    let Verdict::Go(h) = b.admit(&CHARGE, &worst(0.6), false).await else { panic!() };
    assert_eq!(h.admitted_at(), "2026-11-25T23:59:00Z");
    let e = entry(h.admitted_at(), 0.6);
    b.settle(h, charged(&e), &e).await;
    assert!(matches!(b.admit(&CHARGE, &worst(0.6), false).await, Verdict::Refuse(_)));
    let Verdict::Go(held) = b.admit(&CHARGE, &worst(0.3), false).await else { panic!() };
    // Two minutes later it is the next day: a fresh window.
    clock.advance(std::time::Duration::from_secs(120));
    let r = serde_json::to_value(b.report().await).unwrap();
    assert_eq!(r["budgets"][0]["spent_usd"], 0.0);
    assert_eq!(r["budgets"][0]["reserved_usd"], 0.0);
    assert_eq!(r["budgets"][0]["resets_at"], "2026-11-27T00:00:00Z");
    // A hold from yesterday releases into yesterday's counts, not today's.
    drop(held);
    let Verdict::Go(h) = b.admit(&CHARGE, &worst(0.6), false).await else { panic!("a new day has the whole limit") };
    assert!(matches!(b.admit(&CHARGE, &worst(0.6), false).await, Verdict::Refuse(_)), "today's reservation counts");
    drop(h);
}

#[tokio::test]
async fn ledger_stamps_and_files_follow_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let at: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
    let clock = Arc::new(clock::ManualClock::at(at));
    // A damaged ledger under `reset` is moved aside stamped with the clock's time.
    let good = serde_json::to_string(&entry("2026-11-25T10:00:00Z".into(), 0.25)).unwrap();
    std::fs::write(dir.path().join("ledger-2026-11.jsonl"), format!("not an entry\n{good}\n")).unwrap();
    let yaml = config(&format!(
        "state_dir: {}\nbudget_store: {{ on_ledger_error: reset }}\nbudgets:\n  - {{ name: cap, window: day, limit_usd: 1 }}\n",
        dir.path().display()
    ));
    let b = Budgets::open_with_clock(&crate::config::load_str(&yaml, &|_| None).unwrap(), clock.clone()).unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(files.contains(&format!("ledger-2026-11.jsonl.damaged-{}", at.as_second())), "{files:?}");
    assert_eq!(serde_json::to_value(b.report().await).unwrap()["budgets"][0]["spent_usd"], 0.25, "the readable entry counts");
    // A request no budget applies to is admitted on the clock too.
    clock.advance(std::time::Duration::from_secs(90));
    assert_eq!(b.no_hold().admitted_at(), "2026-11-25T12:01:30Z");
    // An entry whose time does not parse goes to the file of the clock's month.
    // (A month the wall clock is not in.)
    clock.set("2001-02-03T00:00:00Z".parse().unwrap());
    b.settle(b.no_hold(), Amounts::default(), &entry("not a time".into(), 0.0)).await;
    assert!(dir.path().join("ledger-2001-02.jsonl").exists());
}

/// A bound and a tighter count, as a request's byte bound and token count.
struct Bounded(f64, f64, std::sync::atomic::AtomicU32);

impl Estimate for Bounded {
    fn bound(&self) -> Amounts {
        worst(self.0)
    }
    fn is_exact(&self) -> bool {
        false
    }
    fn exact(&self) -> Amounts {
        self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        worst(self.1)
    }
}

#[tokio::test]
async fn admission_recounts_a_bound_that_does_not_fit_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let b = Budgets::open(&snapshot(dir.path(), "  - { name: cap, window: day, limit_usd: 1 }\n")).unwrap();
    let fits = Bounded(0.5, 0.1, Default::default());
    let Verdict::Go(first) = b.admit(&CHARGE, &fits, false).await else { panic!() };
    assert_eq!(fits.2.load(std::sync::atomic::Ordering::SeqCst), 0, "a bound that fits is reserved as is");
    // 0.5 reserved + a 0.6 bound is over; the exact 0.3 fits.
    let tight = Bounded(0.6, 0.3, Default::default());
    let Verdict::Go(second) = b.admit(&CHARGE, &tight, false).await else { panic!("the exact count fits") };
    assert_eq!(tight.2.load(std::sync::atomic::Ordering::SeqCst), 1);
    let r = serde_json::to_value(b.report().await).unwrap();
    assert_eq!(r["budgets"][0]["reserved_usd"], 0.8, "the exact count is what is reserved");
    assert!(matches!(b.admit(&CHARGE, &Bounded(0.9, 0.3, Default::default()), false).await, Verdict::Refuse(_)));
    drop((first, second));
}

#[tokio::test]
async fn reports_serialize_to_the_json_the_admin_api_always_answered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(clock::ManualClock::at("2026-11-25T12:00:00Z".parse().unwrap()));
    let snap = snapshot(dir.path(), "  - { name: cap, window: day, limit_usd: 1, limit_tokens: 1000, on_exceed: downgrade, downgrade_to: cheapest }\n");
    let b = Budgets::open_with_clock(&snap, clock).unwrap();
    let Verdict::Go(h) = b.admit(&CHARGE, &worst(0.1), false).await else { panic!() };
    let e = entry(h.admitted_at(), 0.25);
    b.settle(h, charged(&e), &e).await;
    // The shape the reports had as `serde_json::Value`s, key order included.
    let mut row = serde_json::json!({
        "name": "cap", "scope": "global", "window": "day", "limit_usd": 1.0, "spent_usd": 0.25, "reserved_usd": 0.0, "remaining_usd": 0.75,
        "state": "ok", "detail": "ok: $0.2500 of $1.0000 spent, 10 tokens of 1000 tokens spent", "on_exceed": "downgrade", "warn_at": 0.8, "resets_at": "2026-11-26T00:00:00Z", "spent_tokens": 10, "reserved_tokens": 0, "requests": 1,
    });
    row["limit_tokens"] = serde_json::json!(1000);
    row["downgrade_to"] = serde_json::json!("cheapest");
    let want = serde_json::json!({"budgets": [row], "store": {"kind": "file"}});
    assert_eq!(serde_json::to_string(&b.report().await).unwrap(), want.to_string());
    let cell = serde_json::json!({"requests": 1, "input_tokens": 5, "output_tokens": 5, "cost_usd": 0.25, "requested_cost_usd": 0.25, "savings_usd": 0.0, "savings_pct": 0.0});
    let want = serde_json::json!({
        "window": "day", "from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z", "total": cell,
        "by_provider": {"openai": cell}, "by_model": {"m": cell}, "by_app": {"default": cell}, "by_route": {"none": cell},
        // Added later: by task (`none` without one) and by split arm (none here).
        "by_task": {"none": cell}, "by_arm": {}, "spend_spike": false,
    });
    assert_eq!(serde_json::to_string(&b.usage(Window::Day)).unwrap(), want.to_string());
}
