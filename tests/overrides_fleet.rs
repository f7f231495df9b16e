//! Admin overrides shared by a fleet through a real `redis-server` (started
//! here on a Unix socket in a temp dir, as in budgets_redis.rs): an override
//! set or deleted on one sidecar is applied by the others within a second;
//! a sidecar started later has it; one whose config lacks the target keeps
//! it stored but inactive; with Redis stopped the last overrides stay in
//! force and `/admin/overrides` says the store is down; when Redis is back
//! changes propagate again; a Redis that lost its data is seeded again.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Config, Kind, Mock, Modelgate};
use serde_json::{json, Value};

const TOKEN: &str = "fl33t";

/// Route `main` sends gpt-4o* to gpt-4o-mini; overrides point it at
/// `gpt-4o` (or `o3`, which only `with_o3` configs have).
fn config(mock: &Mock, redis: &Redis, with_o3: bool) -> String {
    let mut c = Config::new()
        .raw(&format!("budget_store: {{ kind: redis, url: \"{}\" }}\nadmin_token_env: MG_FLEET_TOKEN", redis.url()))
        .provider("openai", Kind::OpenAi, mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0);
    if with_o3 {
        c = c.model("o3", "openai").prices(2.0, 8.0);
    }
    c.route(r#"name: main, match: { model: "gpt-4o*" }, target: gpt-4o-mini"#).build()
}

fn start(conf: &str) -> Modelgate {
    Modelgate::start_with_env(conf, &[("MG_FLEET_TOKEN", TOKEN)])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// The model that served a request for gpt-4o through `mg`.
async fn served_by(mg: &Modelgate) -> String {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]});
    let r = client().post(format!("{}/v1/chat/completions", mg.gateway)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", mg.stderr());
    r.headers().get("x-modelgate-model").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// How long until requests through `mg` are served by `model` (panics
/// after `limit`).
async fn until_served_by(mg: &Modelgate, model: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if served_by(mg).await == model {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not served by {model} after {limit:?}: {}\n{}", list(mg).await, mg.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(mg: &Modelgate, target: &str) -> (u16, Value) {
    let r = client()
        .put(format!("{}/admin/overrides/main", mg.admin))
        .bearer_auth(TOKEN)
        .json(&json!({"target": target, "note": "fleet test"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn delete(mg: &Modelgate) -> (u16, Value) {
    let r = client().delete(format!("{}/admin/overrides/main", mg.admin)).bearer_auth(TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn list(mg: &Modelgate) -> Value {
    client().get(format!("{}/admin/overrides", mg.admin)).send().await.unwrap().json().await.unwrap()
}

/// Wait until `mg`'s override store is in `state` (panics after 5 s).
async fn until_store(mg: &Modelgate, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = list(mg).await;
        if l["store"]["state"] == state {
            return l;
        }
        assert!(Instant::now() < deadline, "store not {state}: {l}\n{}", mg.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_set_or_deleted_on_one_sidecar_applies_on_every_other_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let a = start(&config(&mock, &redis, true));
    let b = start(&config(&mock, &redis, true));
    // `lean` has no model o3.
    let lean = start(&config(&mock, &redis, false));
    for mg in [&a, &b, &lean] {
        assert_eq!(served_by(mg).await, "gpt-4o-mini");
        let l = until_store(mg, "up").await;
        assert_eq!(l["store"]["kind"], "redis");
        assert_eq!(l["store"]["subscribed"], true, "{l}");
    }

    let (status, body) = put(&a, "gpt-4o").await;
    assert_eq!(status, 200, "{body}");
    let took = until_served_by(&b, "gpt-4o", Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "the other sidecar applied the override after {took:?}");
    assert_eq!(served_by(&a).await, "gpt-4o");
    let l = list(&b).await;
    assert_eq!(l["overrides"][0]["route"], "main");
    assert_eq!(l["overrides"][0]["note"], "fleet test");
    assert_eq!(l["overrides"][0]["active"], true);
    // The local copy in state_dir follows the fleet.
    let copy = std::fs::read_to_string(b.dir.path().join("state/overrides.json")).unwrap();
    assert!(copy.contains("\"gpt-4o\""), "{copy}");

    // DELETE on the other one propagates back.
    let (status, body) = delete(&b).await;
    assert_eq!(status, 200, "{body}");
    let took = until_served_by(&a, "gpt-4o-mini", Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "the deletion reached the first sidecar after {took:?}");
    assert_eq!(delete(&a).await.0, 404, "gone from the fleet's store");

    // A target this sidecar's config lacks is stored but inactive there,
    // and active everywhere else.
    let (status, body) = put(&b, "o3").await;
    assert_eq!(status, 200, "{body}");
    until_served_by(&a, "o3", Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let l = loop {
        let l = list(&lean).await;
        if l["overrides"][0]["target"] == "o3" {
            break l;
        }
        assert!(Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(l["overrides"][0]["active"], false, "{l}");
    assert!(l["overrides"][0]["problem"].as_str().unwrap().contains("unknown model `o3`"), "{l}");
    assert_eq!(served_by(&lean).await, "gpt-4o-mini");
    assert!(lean.stderr().contains("does not apply to this config"), "a warning in the log");
    // The sidecar itself refuses to set it, as before.
    assert_eq!(put(&lean, "o3").await.0, 400);

    // A sidecar started afterwards has the fleet's current override.
    assert_eq!(put(&a, "gpt-4o").await.0, 200);
    let c = start(&config(&mock, &redis, true));
    until_served_by(&c, "gpt-4o", Duration::from_secs(1)).await;
    assert_eq!(list(&c).await["overrides"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_the_last_overrides_and_changes_propagate_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let a = start(&config(&mock, &redis, true));
    let b = start(&config(&mock, &redis, true));
    for mg in [&a, &b] {
        until_store(mg, "up").await;
    }
    assert_eq!(put(&a, "gpt-4o").await.0, 200);
    until_served_by(&b, "gpt-4o", Duration::from_secs(1)).await;

    redis.stop();
    for mg in [&a, &b] {
        let l = until_store(mg, "down").await;
        assert!(l["store"]["since"].as_str().is_some(), "{l}");
        assert!(l["store"]["error"].as_str().is_some(), "{l}");
        assert_eq!(l["overrides"][0]["target"], "gpt-4o", "the last known override is listed: {l}");
        // ... and still applied.
        for _ in 0..3 {
            assert_eq!(served_by(mg).await, "gpt-4o");
        }
    }
    // A change cannot reach the fleet: refused, nothing changes locally.
    let (status, body) = put(&b, "o3").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("last known overrides stay in force"), "{body}");
    assert_eq!(delete(&a).await.0, 503);
    assert_eq!(served_by(&b).await, "gpt-4o");

    // Redis returns (with its data: AOF); both sidecars catch up.
    redis = Redis::start(dir.path());
    for mg in [&a, &b] {
        let l = until_store(mg, "up").await;
        assert_eq!(l["overrides"][0]["target"], "gpt-4o");
        // Subscribed again (not merely polling).
        let deadline = Instant::now() + Duration::from_secs(3);
        while list(mg).await["store"]["subscribed"] != true {
            assert!(Instant::now() < deadline, "no subscription after Redis returned: {}", list(mg).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(put(&b, "o3").await.0, 200);
    let took = until_served_by(&a, "o3", Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "after Redis returned, the change took {took:?}");
    assert_eq!(delete(&a).await.0, 200);
    until_served_by(&b, "gpt-4o-mini", Duration::from_secs(1)).await;

    // Redis loses its data: the sidecars' last known overrides are put
    // back (not silently dropped), and a newcomer gets them.
    assert_eq!(put(&a, "gpt-4o").await.0, 200);
    until_served_by(&b, "gpt-4o", Duration::from_secs(1)).await;
    redis.cli(&["FLUSHALL"]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while !redis.cli(&["HGET", "{modelgate}:overrides", "main"]).contains("gpt-4o") {
        assert!(Instant::now() < deadline, "the overrides were not seeded again\n{}", a.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = start(&config(&mock, &redis, true));
    until_served_by(&c, "gpt-4o", Duration::from_secs(1)).await;
    assert_eq!(served_by(&a).await, "gpt-4o");
    assert_eq!(served_by(&b).await, "gpt-4o");
}
