//! Virtual keys, auth modes and rate limits end to end against the release
//! binary and the mock provider: `auth.mode: known_keys` answers an
//! unknown, missing or revoked key 401 in the client's dialect before any
//! upstream call and injects the provider's real key; a key's RPM limit
//! and its own budget hold under 300 concurrent requests; keys created at
//! runtime through `/admin/keys` work at once and stop at revocation; two
//! sidecars sharing Redis enforce one RPM limit.

mod common;

use common::redis::Redis;
use common::{http_get, Config, Mock, Modelgate};
use serde_json::{json, Value};

const ALICE: &str = "mg-alice-secret";
const REAL: &str = "sk-real-provider-key";

fn hash(key: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `openai` and `anthropic` on `mock`, both injecting REAL; `extra` is
/// more YAML (keys:, rate_limits:, budget_store:).
fn config(mock: &Mock, extra: &str) -> String {
    Config::openai_anthropic(mock)
        .raw(extra)
        .model("gpt-4o", "openai")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .model("claude-haiku", "anthropic")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .build()
        .replace("kind: openai,", "kind: openai, api_key_env: REAL_KEY,")
        .replace("kind: anthropic,", "kind: anthropic, api_key_env: REAL_KEY,")
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "count these words please ".repeat(325)}]})
}

async fn openai(client: &reqwest::Client, mg: &Modelgate, key: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&chat());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap_or(Value::Null))
}

fn start(mock: &Mock, extra: &str) -> Modelgate {
    Modelgate::start_with_env(&config(mock, extra), &[("REAL_KEY", REAL), ("MG_ADMIN_TOKEN", "admintok")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_keys_mode_refuses_unknown_keys_before_any_upstream_call_and_injects_the_real_key() {
    let mock = Mock::start().await;
    let keys = format!("auth: {{ mode: known_keys }}\nkeys:\n  - {{ name: alice, key_sha256: \"{}\", app: billing, user: alice }}\n", hash(ALICE));
    let mg = start(&mock, &keys);
    let client = reqwest::Client::new();

    // Unknown and missing keys: 401 in the OpenAI shape, nothing upstream.
    for key in [Some("sk-not-a-known-key"), None] {
        let (status, _, body) = openai(&client, &mg, key).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
        assert_eq!(body["error"]["type"], "authentication_error");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("known_keys"), "{msg}");
        assert!(!msg.contains("sk-not-a-known-key"), "the key itself is never echoed: {msg}");
    }
    // The Anthropic dialect gets its own error shape.
    let r = client
        .post(format!("{}/anthropic/v1/messages", mg.gateway))
        .header("x-api-key", "sk-ant-unknown")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-haiku", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(mock.calls(), 0, "the mock saw nothing");

    // A known key is served with the provider's real key, never its own.
    let (status, _, body) = openai(&client, &mg, Some(ALICE)).await;
    assert_eq!(status, 200, "{body}");
    let seen = mock.last_call();
    assert_eq!(seen.headers["authorization"], format!("Bearer {REAL}"));
    assert!(!format!("{:?}", seen.headers).contains(ALICE));
    // The access log names the key and its hash prefix, never the key.
    let log = mg.wait_access_log(4);
    let line = log.iter().find(|l| l["status"] == 200).unwrap();
    assert_eq!(line["key"], "alice");
    assert_eq!(line["app"], "billing");
    assert_eq!(line["key_hash"].as_str().unwrap().len(), 8);
    let text = std::fs::read_to_string(mg.dir.path().join("access.log")).unwrap();
    assert!(!text.contains(ALICE), "the key itself is never logged");
    let m = mg.metrics();
    assert_eq!(common::metric_sum(&m, "modelgate_auth_rejected_total", &[("reason", "unknown")]), 2.0);
    assert_eq!(common::metric_sum(&m, "modelgate_auth_rejected_total", &[("reason", "missing")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_rpm_limit_holds_under_300_concurrent_requests() {
    let mock = Mock::start().await;
    let keys = format!("auth: {{ mode: known_keys }}\nkeys:\n  - {{ name: alice, key_sha256: \"{}\", rate_limits: {{ rpm: 50 }} }}\n", hash(ALICE));
    let mg = start(&mock, &keys);
    let (mut ok, mut limited) = (0, 0);
    for t in burst(&[&mg], Some(ALICE), 300) {
        let (status, h, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
                assert!(body["error"]["message"].as_str().unwrap().contains("50 requests per minute"), "{body}");
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                assert_eq!(h["x-should-retry"], "true", "a rate limit is worth the SDK's own backoff");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 50, "exactly the limit is admitted in the window");
    assert_eq!(limited, 250);
    assert_eq!(mock.calls(), 50);
    let m = mg.metrics();
    assert_eq!(common::metric_sum(&m, "modelgate_rate_limited_total", &[("limit", "key:alice"), ("kind", "requests")]), 250.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_own_budget_holds_under_300_concurrent_requests() {
    let mock = Mock::start().await;
    // One call costs $0.015; the worst case reserves ~$0.017.
    let keys = format!(
        "auth: {{ mode: known_keys }}\nkeys:\n  - {{ name: alice, key_sha256: \"{}\", budgets: [{{ name: day, window: day, limit_usd: 0.5 }}] }}\n  - {{ name: bob, key_sha256: \"{}\" }}\n",
        hash(ALICE),
        hash("mg-bob")
    );
    let mg = start(&mock, &keys);
    let ok = served(burst(&[&mg], Some(ALICE), 300)).await;
    assert!(ok > 0 && ok < 300, "{ok}");
    let b = budget(&mg, "key:alice:day");
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!(spent <= 0.5, "spent {spent}");
    assert!((spent - ok as f64 * 0.015).abs() < 1e-9, "spent {spent} for {ok}");
    assert_eq!(b["reserved_usd"].as_f64().unwrap(), 0.0);
    assert_eq!(b["scope"], "key=alice");
    // Another key is not held back by alice's budget.
    let (status, _, _) = openai(&reqwest::Client::new(), &mg, Some("mg-bob")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_at_runtime_work_at_once_and_stop_when_revoked() {
    let mock = Mock::start().await;
    let mut mg = start(&mock, "admin_token_env: MG_ADMIN_TOKEN\nauth: { mode: known_keys }\n");
    let client = reqwest::Client::new();
    // Creating needs the admin token.
    let r = client.post(format!("{}/admin/keys", mg.admin)).json(&json!({"name": "carol"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .post(format!("{}/admin/keys", mg.admin))
        .bearer_auth("admintok")
        .json(&json!({"name": "carol", "app": "support", "user": "carol", "models": ["gpt-4o*"], "rpm": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("mg-") && key.len() > 40, "{key}");
    let hex = hash(&key).trim_start_matches("sha256:").to_string();
    assert_eq!(created["hash_prefix"], hex[..8]);
    let (status, _, body) = openai(&client, &mg, Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    // The key's model list holds.
    let r = client
        .post(format!("{}/v1/chat/completions", mg.gateway))
        .bearer_auth(&key)
        .json(&json!({"model": "claude-haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Listed without the key; stored hashed only.
    let (_, list) = http_get(&format!("{}/admin/keys", mg.admin)).unwrap();
    assert!(list.contains("\"carol\"") && !list.contains(&key), "{list}");
    let stored = std::fs::read_to_string(mg.dir.path().join("state/keys.json")).unwrap();
    assert!(!stored.contains(&key) && stored.contains(&hex), "{stored}");
    // Survives a restart.
    mg.restart();
    let (status, _, _) = openai(&client, &mg, Some(&key)).await;
    assert_eq!(status, 200);
    // Revoked: 401 at once, and still after a restart.
    let r = client.delete(format!("{}/admin/keys/carol", mg.admin)).bearer_auth("admintok").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let calls = mock.calls();
    let (status, _, body) = openai(&client, &mg, Some(&key)).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    mg.restart();
    let (status, _, _) = openai(&client, &mg, Some(&key)).await;
    assert_eq!(status, 401);
    assert_eq!(mock.calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runtime_keys_own_budget_holds_under_300_concurrent_requests_and_across_a_restart() {
    let mock = Mock::start().await;
    let mut mg = start(&mock, "admin_token_env: MG_ADMIN_TOKEN\nauth: { mode: known_keys }\n");
    let client = reqwest::Client::new();
    let create = |body: Value| client.post(format!("{}/admin/keys", mg.admin)).bearer_auth("admintok").json(&body).send();
    // A budget that does not pass is refused with its path, and no key is made.
    let r = create(json!({"name": "dave", "budgets": [{"name": "day", "window": "fortnight", "limit_usd": 0.5}]})).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("budgets[0].window") && text.contains("fortnight"), "{text}");
    let r = create(json!({"name": "dave", "budgets": [{"name": "day", "window": "day", "limit_usd": 0.5}]})).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["budgets"][0]["name"], "key:dave:day", "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let ok = served(burst(&[&mg], Some(&key), 300)).await;
    assert!(ok > 0 && ok < 300, "{ok}");
    let b = budget(&mg, "key:dave:day");
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!(spent <= 0.5, "spent {spent}");
    assert!((spent - ok as f64 * 0.015).abs() < 1e-9, "spent {spent} for {ok}");
    assert_eq!(b["reserved_usd"].as_f64().unwrap(), 0.0);
    assert_eq!(b["scope"], "key=dave");
    // After a restart the key keeps its budget and the spend counted from the ledger.
    mg.restart();
    assert_eq!(budget(&mg, "key:dave:day")["spent_usd"].as_f64().unwrap(), spent);
    // What is left serves at most its share, then the key is refused.
    let mut more = 0;
    let body = loop {
        let (status, _, body) = openai(&client, &mg, Some(&key)).await;
        match status {
            200 => more += 1,
            429 => break body,
            other => panic!("{other}: {body}"),
        }
        assert!(spent + more as f64 * 0.015 <= 0.5, "the budget was not kept across the restart: {more} more served after {spent}");
    };
    assert!(body["error"]["message"].as_str().unwrap().contains("key:dave:day"), "{body}");
    assert_eq!(budget(&mg, "key:dave:day")["reserved_usd"].as_f64().unwrap(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_sharing_redis_enforce_one_rpm_limit() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let extra = format!(
        "budget_store: {{ kind: redis, url: \"{}\", on_unavailable: fail_closed, timeout_ms: 1000 }}\nrate_limits:\n  - {{ name: fleet, rpm: 40 }}\n",
        redis.url()
    );
    let a = start(&mock, &extra);
    let b = start(&mock, &extra);
    let ok = served(burst(&[&a, &b], None, 200)).await;
    assert_eq!(ok, 40, "one limit for the fleet");
    assert_eq!(mock.calls(), 40);
}

fn run_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_user_budgets_hold_for_50_users_and_cost_lists_them_by_user() {
    use futures_util::StreamExt;
    let mock = Mock::start().await;
    // $0.015 a call, ~$0.017 reserved: each user gets 5 or 6 calls of 20.
    let extra = "budgets:\n  - { name: per-user, per: user, window: day, limit_usd: 0.1 }\n";
    let mg = start(&mock, extra);
    let client = reqwest::Client::new();
    let reqs = (0..50).flat_map(|u| (0..20).map(move |i| (u, i)));
    let results: Vec<(usize, u16)> = futures_util::stream::iter(reqs)
        .map(|(u, i)| {
            let c = client.clone();
            let url = format!("{}/v1/chat/completions", mg.gateway);
            async move {
                let mut body = chat();
                // Half name the user in the body (OpenAI's `user`), half in the header.
                let mut r = c.post(url);
                if i % 2 == 0 {
                    body["user"] = json!(format!("user-{u}"));
                } else {
                    r = r.header("x-modelgate-user", format!("user-{u}"));
                }
                (u, r.json(&body).send().await.unwrap().status().as_u16())
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut ok = [0usize; 50];
    for (u, s) in &results {
        match s {
            200 => ok[*u] += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok.iter().all(|n| (5..=6).contains(n)), "{ok:?}");
    // One at a time, user-0 fits exactly 6 calls ($0.09; a 7th may need $0.107).
    loop {
        let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).header("x-modelgate-user", "user-0").json(&chat()).send().await.unwrap();
        match r.status().as_u16() {
            200 => ok[0] += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok[0], 6);
    assert_eq!(mock.calls(), ok.iter().sum::<usize>());
    let all = budgets(&mg);
    for (u, n) in ok.iter().enumerate() {
        let name = format!("per-user[user-{u}]");
        let b = find(&all, &name);
        let spent = b["spent_usd"].as_f64().unwrap();
        assert!(spent <= 0.1, "{name}: {spent}");
        assert!((spent - *n as f64 * 0.015).abs() < 1e-9, "{name}: {spent}");
        assert_eq!(b["reserved_usd"].as_f64().unwrap(), 0.0);
    }
    // `modelgate cost --by user` lists every user with its cost.
    let table = run_cli(&["cost", "--by", "user", "--admin", &mg.admin]);
    for u in 0..50 {
        assert!(table.contains(&format!("user-{u} ")), "{table}");
    }
    let json: Value = serde_json::from_str(&run_cli(&["cost", "--by", "user", "--json", "--admin", &mg.admin])).unwrap();
    let by = json["by_user"].as_object().unwrap();
    assert_eq!(by.len(), 50);
    for (u, n) in ok.iter().enumerate() {
        let c = &by[&format!("user-{u}")];
        assert_eq!(c["requests"].as_u64().unwrap() as usize, *n);
        assert!(c["cost_usd"].as_f64().unwrap() <= 0.1);
    }
    // The spend survives a restart (counted again from the ledger): user-0
    // (6 calls, $0.09) has no room for a seventh.
    let six = 0;
    let mut mg = mg;
    mg.restart();
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).header("x-modelgate-user", format!("user-{six}")).json(&chat()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429, "user-{six}'s budget is still used up after a restart");
    let b = budget(&mg, &format!("per-user[user-{six}]"));
    assert!((b["spent_usd"].as_f64().unwrap() - 0.09).abs() < 1e-9, "{b}");
}

#[test]
fn check_reports_key_and_rate_limit_mistakes_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "providers:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:1/v1\" }\nauth: { mode: known_keys }\nkeys:\n  - { name: a, key_sha256: \"nothex\" }\n  - { name: b, key_sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", budgets: [{ name: d, scope: global, window: day, limit_usd: 1 }] }\nrate_limits:\n  - { name: r, per: planet, rpm: 0 }\nbudgets:\n  - { name: u, per: user, scope: { user: x }, window: day, limit_usd: 1 }\n";
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for want in [
        "providers.openai.api_key_env: auth.mode is known_keys",
        "keys[0].key_sha256: must be the SHA-256",
        "keys[1].budgets[0].scope:",
        "rate_limits[0].per: unknown `per: planet`",
        "rate_limits[0].rpm: must be greater than 0",
        "budgets[0].per: `per: user` keeps one budget per user",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_get_401_for_unknown_keys_and_429_for_rate_limits() {
    let mock = Mock::start().await;
    let keys = format!("auth: {{ mode: known_keys }}\nkeys:\n  - {{ name: sdk, key_sha256: \"{}\", rate_limits: {{ rpm: 2 }} }}\n", hash("mg-sdk-key"));
    let mg = start(&mock, &keys);
    let stdout = common::run_python("sdk_keys.py", &mg, &[]).await;
    assert!(stdout.contains("all SDK key checks passed"));
    // Two served requests (one per SDK); the refused ones never left.
    assert_eq!(mock.calls(), 2);
    assert!(mock.requests().iter().all(|r| r.headers.get("authorization").map(|v| v == &format!("Bearer {REAL}")).unwrap_or(true)
        && r.headers.get("x-api-key").map(|v| v == REAL).unwrap_or(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_or_revoked_on_one_sidecar_is_known_to_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let extra =
        format!("admin_token_env: MG_ADMIN_TOKEN\nauth: {{ mode: known_keys }}\nbudget_store: {{ kind: redis, url: \"{}\", timeout_ms: 1000 }}\n", redis.url());
    let (a, b) = (start(&mock, &extra), start(&mock, &extra));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/admin/keys", a.admin))
        .bearer_auth("admintok")
        .json(&json!({"name": "fleet-key", "budgets": [{"name": "day", "window": "day", "limit_usd": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let until = |want: u16, mg: &Modelgate| {
        let (client, key, gw) = (client.clone(), key.clone(), mg.gateway.clone());
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let r = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(&key).json(&chat()).send().await.unwrap();
                if r.status().as_u16() == want {
                    return true;
                }
                if std::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert!(until(200, &b).await, "sidecar b learns the key created on a");
    // And its budget, counted in the shared store: both sidecars report b's call.
    for mg in [&a, &b] {
        let day = budget(mg, "key:fleet-key:day");
        assert!((day["spent_usd"].as_f64().unwrap() - 0.015).abs() < 1e-9, "{day}");
    }
    let r = client.delete(format!("{}/admin/keys/fleet-key", a.admin)).bearer_auth("admintok").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(until(401, &b).await, "sidecar b learns the revocation");
}

type Answer = (u16, reqwest::header::HeaderMap, Value);

/// `n` chat requests at once, spread over `sidecars`, with `key` if given.
fn burst(sidecars: &[&Modelgate], key: Option<&str>, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    let client = reqwest::Client::new();
    (0..n)
        .map(|i| {
            let mut r = client.post(format!("{}/v1/chat/completions", sidecars[i % sidecars.len()].gateway)).json(&chat());
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            tokio::spawn(async move {
                let r = r.send().await.unwrap();
                let (s, h) = (r.status().as_u16(), r.headers().clone());
                (s, h, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect()
}

/// How many of `tasks` were served; the others must be 429.
async fn served(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> usize {
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _, _) => ok += 1,
            (429, _, _) => {}
            (other, _, body) => panic!("unexpected {other}: {body}"),
        }
    }
    ok
}

/// `/admin/budgets`' list.
fn budgets(mg: &Modelgate) -> Value {
    let (_, body) = http_get(&format!("{}/admin/budgets", mg.admin)).unwrap();
    serde_json::from_str::<Value>(&body).unwrap()["budgets"].clone()
}

fn find(budgets: &Value, name: &str) -> Value {
    budgets.as_array().unwrap().iter().find(|b| b["name"] == name).cloned().unwrap_or_else(|| panic!("no budget {name} in {budgets}"))
}

/// The budget `name` as `/admin/budgets` reports it.
fn budget(mg: &Modelgate, name: &str) -> Value {
    find(&budgets(mg), name)
}
