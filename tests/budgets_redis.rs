//! Shared budgets in a real `redis-server` (started here on a Unix socket in
//! a temp dir, so no port is taken): two modelgate processes under
//! concurrent load never overrun one cap; stopping Redis gives fail_open /
//! fail_closed behaviour and both recover when it returns; a Redis that
//! stalls under traffic leaves no reservation behind; a flushed counter is
//! re-seeded from each sidecar's ledger.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{http_get, Config, Kind, Mock, Modelgate};
use serde_json::{json, Value};

const COST: f64 = 0.015;

fn config(mock: &Mock, redis: &Redis, on_unavailable: &str, limit: f64) -> String {
    Config::new()
        .raw(&format!("budget_store: {{ kind: redis, url: \"{}\", on_unavailable: {on_unavailable}, timeout_ms: 1000 }}", redis.url()))
        .provider("openai", Kind::OpenAi, mock)
        .model("gpt-4o", "openai").prices(10.0, 10.0).with("max_output_tokens: 400")
        .raw(&format!("budgets:\n  - {{ name: fleet-day, window: day, limit_usd: {limit}, on_exceed: reject }}\n  - {{ name: heads-up, window: day, limit_usd: 0.05, on_exceed: warn }}"))
        .build()
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "count these words please ".repeat(325)}]})
}

fn report(mg: &Modelgate) -> Value {
    let (status, body) = http_get(&format!("{}/admin/budgets", mg.admin)).expect("admin answers");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

async fn post(client: &reqwest::Client, mg: &Modelgate) -> (u16, Value) {
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&chat()).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_share_one_cap_under_concurrent_load() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let a = Modelgate::start(&config(&mock, &redis, "fail_closed", 0.5));
    let b = Modelgate::start(&config(&mock, &redis, "fail_closed", 0.5));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (c, gw) = (client.clone(), if i % 2 == 0 { a.gateway.clone() } else { b.gateway.clone() });
        tasks.push(tokio::spawn(async move {
            let r = c.post(format!("{gw}/v1/chat/completions")).json(&chat()).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (429, _) => {}
            (s, body) => panic!("unexpected status {s}: {body}\n{}\n{}", a.stderr(), b.stderr()),
        }
    }
    assert!(ok > 0);
    // Alone, each sidecar would have admitted 31 requests; together they
    // share the one cap.
    assert!(ok as f64 * COST <= 0.5, "{ok} requests served: over the shared cap");
    assert_eq!(mock.calls(), ok);
    for mg in [&a, &b] {
        let r = report(mg);
        assert_eq!(r["store"]["available"], true);
        // The warn-only budget passes its limit without blocking, and
        // neither budget keeps a reservation.
        for bud in r["budgets"].as_array().unwrap() {
            assert!((f(&bud["spent_usd"]) - ok as f64 * COST).abs() < 1e-9, "both see the fleet's spend: {bud}");
            assert_eq!(f(&bud["reserved_usd"]), 0.0, "{bud}");
        }
        assert_eq!(r["budgets"][1]["state"], "exceeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_follows_fail_open_or_fail_closed_and_both_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let open = Modelgate::start(&config(&mock, &redis, "fail_open", 10.0));
    let closed = Modelgate::start(&config(&mock, &redis, "fail_closed", 10.0));
    let client = reqwest::Client::new();
    for mg in [&open, &closed] {
        assert_eq!(post(&client, mg).await.0, 200);
    }

    redis.stop();
    // fail_closed refuses quickly with a clear error; fail_open serves.
    let started = Instant::now();
    let (status, body) = post(&client, &closed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "budget_store_unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("fail_closed"));
    assert!(started.elapsed() < Duration::from_secs(3), "no hang while Redis is down");
    for _ in 0..3 {
        assert_eq!(post(&client, &open).await.0, 200);
    }
    let r = report(&open);
    assert_eq!(r["store"]["available"], false);
    assert!(common::metric_sum(&open.metrics(), "modelgate_budget_store_up", &[]) == 0.0);

    redis = Redis::start(dir.path());
    // Both recover: fail_closed serves again, and fail_open's spend during
    // the outage is replayed into Redis.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = post(&client, &closed).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "fail_closed sidecar did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 2 before the outage, 3 during (fail_open), 1 after = 6 served.
    let want = 6.0 * COST;
    loop {
        let r = report(&open);
        let spent = f(&r["budgets"][0]["spent_usd"]);
        if r["store"]["available"] == true && (spent - want).abs() < 1e-9 {
            assert_eq!(f(&r["budgets"][0]["reserved_usd"]), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "outage spend not reconciled: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mock.calls(), 6);
    drop(redis);
}

/// Spent and reserved nano-dollars of budget `name` in Redis (its only
/// window in these tests).
fn in_redis(redis: &Redis, name: &str) -> (i64, i64) {
    let keys = redis.cli(&["--scan", "--pattern", &format!("{{modelgate}}:budget:{name}:*")]);
    let key = keys.lines().find(|k| !k.ends_with(":holds")).unwrap_or_else(|| panic!("no counter for {name} in Redis: {keys:?}")).to_string();
    let v = redis.cli(&["HMGET", &key, "sn", "rn"]);
    let mut it = v.lines().map(|l| l.trim().parse::<i64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn counts(mg: &Modelgate, name: &str) -> (bool, f64, f64) {
    let r = report(mg);
    let b = r["budgets"].as_array().unwrap().iter().find(|b| b["name"] == name).unwrap().clone();
    (r["store"]["available"] == true, f(&b["spent_usd"]), f(&b["reserved_usd"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_stall_under_traffic_leaves_no_reservation_behind() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    // Calls time out fast, so reservations sent to the stalled Redis are
    // abandoned by modelgate while Redis still holds them in its socket.
    let conf = config(&mock, &redis, "fail_open", 1000.0).replace("timeout_ms: 1000", "timeout_ms: 100");
    let mg = Modelgate::start(&conf);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, gw, stop) = (client.clone(), mg.gateway.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.post(format!("{gw}/v1/chat/completions")).json(&chat()).send().await.unwrap();
                let status = r.status().as_u16();
                assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
                served += 1;
            }
            served
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.signal("CONT");
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    assert_eq!(mock.calls(), served);
    // Once traffic stops, nothing stays reserved, and every served request
    // is counted exactly once (nothing lost, nothing replayed twice).
    let want = (served as f64 * COST * 1e9).round() as i64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (up, spent, reserved) = counts(&mg, "fleet-day");
        let (sn, rn) = in_redis(&redis, "fleet-day");
        if up && reserved == 0.0 && rn == 0 && sn == want {
            assert!((spent - served as f64 * COST).abs() < 1e-6);
            break;
        }
        assert!(Instant::now() < deadline, "after the stall: {served} served (want {want} nano-USD spent); Redis has spent {sn}, reserved {rn}; /admin/budgets: up {up}, spent {spent}, reserved {reserved}\n{}", mg.stderr().lines().rev().take(20).collect::<Vec<_>>().join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flushed_budget_is_reseeded_from_each_sidecars_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let a = Modelgate::start(&config(&mock, &redis, "fail_closed", 10.0));
    let b = Modelgate::start(&config(&mock, &redis, "fail_closed", 10.0));
    let client = reqwest::Client::new();
    for mg in [&a, &a, &b] {
        assert_eq!(post(&client, mg).await.0, 200);
    }
    assert!((counts(&a, "fleet-day").1 - 3.0 * COST).abs() < 1e-9);

    // Redis loses everything mid-window (a restart without persistence).
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    // Each sidecar adds its own spend back from its ledger the next time it
    // looks at the budget: the window's spend is whole again, not 0.
    for mg in [&a, &b] {
        let (up, spent, reserved) = counts(mg, "fleet-day");
        assert!(up);
        assert_eq!(reserved, 0.0);
        let _ = spent;
    }
    for mg in [&a, &b] {
        let (_, spent, _) = counts(mg, "fleet-day");
        assert!((spent - 3.0 * COST).abs() < 1e-9, "after FLUSHALL /admin/budgets shows {spent}, not the window's {}", 3.0 * COST);
        assert!(mg.stderr().contains("lost this process's spend"), "{}", mg.stderr());
    }
    // Counting goes on from there, once per sidecar (no double re-seed).
    assert_eq!(post(&client, &b).await.0, 200);
    assert_eq!(post(&client, &a).await.0, 200);
    for mg in [&a, &b] {
        assert!((counts(mg, "fleet-day").1 - 5.0 * COST).abs() < 1e-9);
    }
    assert_eq!(in_redis(&redis, "fleet-day").0, (5.0 * COST * 1e9).round() as i64);
}
