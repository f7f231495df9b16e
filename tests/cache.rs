//! The response cache end to end, through the release binary against the
//! mock provider: hits and misses per changed field, streams (cut and
//! errored ones never stored), JSON and stream kept apart, scopes, client
//! Cache-Control, translation on replay, accounting (access log, ledger,
//! metrics, `modelgate cost`), budgets (a hit holds no dollars but counts
//! as a request), the admin endpoints, coalesced concurrent misses,
//! persistence across a restart, Redis shared by two sidecars (and Redis
//! going away), config errors, and the official SDKs (tests/sdk/sdk_cache.py).

mod common;

use std::time::Duration;

use common::redis::Redis;
use common::{http_get, metric_sum, Config, Mock, Modelgate, Script};
use serde_json::{json, Value};

/// `openai` and `anthropic` on `mock`; gpt-4o and gpt-4o-mini (OpenAI),
/// claude-haiku (Anthropic); `cache` as the body of `cache:`; one try per
/// model, so call counts are exact.
fn conf(mock: &Mock, cache: &str) -> Config {
    Config::openai_anthropic(mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .raw("retry: { max_attempts: 1 }")
        .raw("admin_token_env: MG_TEST_ADMIN")
        .raw(&format!("cache:\n{cache}"))
}

/// Start modelgate with the admin token `admin-secret`.
fn start(yaml: &str) -> Modelgate {
    Modelgate::start_with_env(yaml, &[("MG_TEST_ADMIN", "admin-secret")])
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn cache(&self) -> &str {
        self.headers.get("x-modelgate-cache").and_then(|v| v.to_str().ok()).unwrap_or("(none)")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(mg: &Modelgate, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
    send_raw(mg, path, headers, body.to_string()).await
}

async fn send_raw(mg: &Modelgate, path: &str, headers: &[(&str, &str)], body: String) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.post(format!("{}{path}", mg.gateway)).header("content-type", "application/json");
    if path.starts_with("/anthropic") {
        req = req.header("x-api-key", "sk-ant-test").header("anthropic-version", "2023-06-01");
    } else if !headers.iter().any(|(k, _)| *k == "authorization") {
        req = req.header("authorization", "Bearer sk-test");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Answer { status, headers, body }
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 50, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/anthropic/v1/messages";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_twice_is_a_hit_and_any_changed_field_a_miss() {
    let mock = Mock::start().await;
    // Temperatures up to 1 are cacheable here, so a changed temperature is
    // a miss rather than a bypass.
    let mg = start(&conf(&mock, "  min_temperature_cacheable: 1").build());
    let base = chat(json!({}));
    let first = send(&mg, CHAT, &[], &base).await;
    assert_eq!((first.status, first.cache()), (200, "miss"), "{}", first.text());
    let second = send(&mg, CHAT, &[], &base).await;
    assert_eq!((second.status, second.cache()), (200, "hit"));
    assert_eq!(second.body, first.body, "a hit answers byte for byte what the miss answered");
    assert_eq!(mock.model_calls(), 1);
    assert_eq!(second.headers["x-modelgate-attempts"], "0");
    assert_eq!(second.headers["x-modelgate-cost-usd"], "0");
    assert!(second.headers.get("age").is_some());

    // Key order, whitespace and number spelling do not split the key.
    let respelled = "{ \"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"role\":\"user\",\"content\":\"Say hello\"}],\n  \"max_tokens\": 50.0, \"temperature\": 0.0, \"model\": \"gpt-4o-mini\" }";
    assert_eq!(send_raw(&mg, CHAT, &[], respelled.into()).await.cache(), "hit");
    assert_eq!(mock.model_calls(), 1);

    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    type Variant<'a> = (&'a str, Value, Vec<(&'a str, &'a str)>);
    let variants: Vec<Variant> = vec![
        ("temperature", chat(json!({"temperature": 0.5})), vec![]),
        ("max_tokens", chat(json!({"max_tokens": 51})), vec![]),
        ("tools", chat(json!({"tools": tools})), vec![]),
        ("system", chat(json!({"messages": [{"role": "system", "content": "Be brief!"}, {"role": "user", "content": "Say hello"}]})), vec![]),
        ("one message byte", chat(json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hellO"}]})), vec![]),
        ("model", chat(json!({"model": "gpt-4o"})), vec![]),
        ("stream", chat(json!({"stream": true})), vec![]),
        ("app", base.clone(), vec![("x-modelgate-app", "other-app")]),
        ("client key", base.clone(), vec![("authorization", "Bearer sk-other")]),
    ];
    for (i, (what, body, headers)) in variants.iter().enumerate() {
        let a = send(&mg, CHAT, headers, body).await;
        assert_eq!((a.status, a.cache()), (200, "miss"), "changing {what}: {}", a.text());
        assert_eq!(mock.model_calls(), 2 + i, "changing {what} calls the provider");
        // …and is its own entry.
        assert_eq!(send(&mg, CHAT, headers, body).await.cache(), "hit", "{what} repeated");
    }
    assert_eq!(mock.model_calls(), 1 + variants.len());
    // The provider saw each variant as sent (the cache changes no byte).
    assert!(mock.requests().iter().any(|r| r.json()["max_tokens"] == 51));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_replayed_with_their_events_in_order_json_and_stream_kept_apart() {
    let mock = Mock::start().await;
    let mg = start(&conf(&mock, "  ttl_s: 600").build());
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    for (i, body) in
        [chat(json!({"stream": true})), chat(json!({"stream": true, "stream_options": {"include_usage": true}})), chat(json!({"stream": true, "tools": tools}))]
            .iter()
            .enumerate()
    {
        let miss = send(&mg, CHAT, &[], body).await;
        assert_eq!((miss.status, miss.cache()), (200, "miss"));
        assert!(miss.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let hit = send(&mg, CHAT, &[], body).await;
        assert_eq!(hit.cache(), "hit");
        assert!(hit.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        assert_eq!(hit.text(), miss.text(), "stream {i}: the same events in the same order");
        assert!(hit.text().ends_with("data: [DONE]\n\n"));
        assert_eq!(mock.model_calls(), i + 1);
    }
    // The usage-only chunk the client asked for is replayed; the one
    // modelgate asked for is not.
    let with_usage = send(&mg, CHAT, &[], &chat(json!({"stream": true, "stream_options": {"include_usage": true}}))).await;
    assert!(with_usage.text().contains("\"prompt_tokens\""));
    assert!(!send(&mg, CHAT, &[], &chat(json!({"stream": true}))).await.text().contains("\"prompt_tokens\""));

    // The JSON request with the same body is not served from the stream.
    let json_answer = send(&mg, CHAT, &[], &chat(json!({}))).await;
    assert_eq!(json_answer.cache(), "miss");
    assert_eq!(json_answer.json()["choices"][0]["message"]["content"], "Hello from the mock");

    // Anthropic streams, tool use included.
    let msg = json!({"model": "claude-haiku", "max_tokens": 50, "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]});
    let miss = send(&mg, MESSAGES, &[], &msg).await;
    let hit = send(&mg, MESSAGES, &[], &msg).await;
    assert_eq!((miss.cache(), hit.cache()), ("miss", "hit"));
    assert_eq!(hit.text(), miss.text());
    assert!(hit.text().contains("input_json_delta") && hit.text().contains("message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_truncated_or_errored_stream_is_never_stored() {
    let mock = Mock::start().await;
    let mg = start(&conf(&mock, "  ttl_s: 600").build());
    let body = chat(json!({"stream": true}));
    let mut calls = 0;
    for script in [Script::Cut, Script::Truncate, Script::ErrorEvent, Script::InvalidBody, Script::Status(500)] {
        mock.script([script.clone()]);
        let a = send(&mg, CHAT, &[], &body).await;
        calls += 1;
        assert_eq!(a.cache(), "miss", "{script:?}");
        assert!(a.status != 200 || a.text().contains("error"), "{script:?}: {}", a.text());
        // Not stored: the next identical request goes upstream.
        let b = send(&mg, CHAT, &[], &body).await;
        calls += 1;
        assert_eq!((b.status, b.cache()), (200, "miss"), "after {script:?}");
        assert_eq!(mock.model_calls(), calls, "after {script:?}");
        // That clean answer is stored; clear it for the next script.
        assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "hit");
        clear(&mg, "").await;
    }
    // A JSON answer with an error status, or a 200 that is not an answer, is not stored either.
    let json_body = chat(json!({}));
    mock.script([Script::Status(400)]);
    assert_eq!(send(&mg, CHAT, &[], &json_body).await.status, 400);
    assert_eq!(send(&mg, CHAT, &[], &json_body).await.cache(), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_bypasses_the_cache() {
    let mock = Mock::start().await;
    let conf = conf(&mock, "  ttl_s: 600")
        .route("name: nocache, match: { model: \"gpt-4o\" }, target: gpt-4o, cache: false")
        .route("name: warm, match: { app: warm }, target: gpt-4o-mini, cache: { min_temperature_cacheable: 1 }")
        .build();
    let mg = start(&conf);
    let calls = |n| assert_eq!(mock.model_calls(), n);
    // The default: only temperature 0 or a seed is cached.
    for body in [chat(json!({"temperature": 0.7})), json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}), chat(json!({"n": 2}))] {
        assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "bypass", "{body}");
        assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "bypass", "{body}");
    }
    calls(6);
    let seeded = chat(json!({"temperature": 0.7, "seed": 42}));
    assert_eq!(send(&mg, CHAT, &[], &seeded).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[], &seeded).await.cache(), "hit");
    calls(7);
    // A route with `cache: false`; a route that caches warmer requests.
    assert_eq!(send(&mg, CHAT, &[], &chat(json!({"model": "gpt-4o"}))).await.cache(), "bypass");
    let warm = chat(json!({"temperature": 0.7}));
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "warm")], &warm).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "warm")], &warm).await.cache(), "hit");
    calls(9);
    // no-store: neither served nor kept; no-cache: not served, but the fresh answer is kept.
    let body = chat(json!({"max_tokens": 7}));
    assert_eq!(send(&mg, CHAT, &[("cache-control", "no-store")], &body).await.cache(), "bypass");
    assert_eq!(send(&mg, CHAT, &[("cache-control", "no-cache")], &body).await.cache(), "bypass");
    calls(11);
    assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "hit");
    assert_eq!(send(&mg, CHAT, &[("cache-control", "no-store")], &body).await.cache(), "bypass");
    calls(12);
    // Not a model call.
    let models = reqwest::get(format!("{}/v1/models", mg.gateway)).await.unwrap();
    assert_eq!(models.headers().get("x-modelgate-cache").map(|v| v.to_str().unwrap()), Some("bypass"));
    let m = mg.metrics();
    assert!(metric_sum(&m, "modelgate_cache_bypasses_total", &[("reason", "temperature")]) >= 4.0, "{m}");
    assert!(metric_sum(&m, "modelgate_cache_bypasses_total", &[("reason", "n")]) >= 2.0);
    assert!(metric_sum(&m, "modelgate_cache_bypasses_total", &[("reason", "no_store")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_per_app_and_key_unless_the_scope_is_global() {
    let mock = Mock::start().await;
    let conf = conf(&mock, "  scope: app").route("name: shared, match: { app: \"team-*\" }, target: gpt-4o-mini, cache: { scope: global }").build();
    let mg = start(&conf);
    let body = chat(json!({}));
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "a")], &body).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "b")], &body).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "a"), ("authorization", "Bearer sk-2")], &body).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "a")], &body).await.cache(), "hit");
    // scope: global shares across apps and keys.
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "team-1")], &body).await.cache(), "miss");
    assert_eq!(send(&mg, CHAT, &[("x-modelgate-app", "team-2"), ("authorization", "Bearer sk-9")], &body).await.cache(), "hit");
    assert_eq!(mock.model_calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_translated_on_its_way_back_like_a_live_answer() {
    let mock = Mock::start().await;
    // Anthropic clients served by gpt-4o-mini (translated both ways).
    let conf = conf(&mock, "  ttl_s: 600")
        .route("name: to-openai, match: { model: \"claude-*\" }, target: gpt-4o-mini")
        .raw("cross_provider_client_keys: true")
        .build();
    let mg = start(&conf);
    for stream in [false, true] {
        let body = json!({"model": "claude-haiku", "max_tokens": 50, "temperature": 0, "stream": stream, "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
        let miss = send(&mg, MESSAGES, &[], &body).await;
        let hit = send(&mg, MESSAGES, &[], &body).await;
        assert_eq!((miss.status, miss.cache(), hit.cache()), (200, "miss", "hit"), "{}", miss.text());
        assert_eq!(hit.headers["x-modelgate-provider"], "openai");
        if stream {
            assert!(hit.text().contains("event: message_start") && hit.text().contains("event: message_stop"), "{}", hit.text());
            assert!(hit.text().contains("tool_use"));
            // Same events in the same order (ids made up by translation aside).
            let kinds = |t: &str| t.lines().filter(|l| l.starts_with("event:")).map(String::from).collect::<Vec<_>>();
            assert_eq!(kinds(&hit.text()), kinds(&miss.text()));
        } else {
            assert_eq!(hit.json()["content"][0]["type"], "tool_use");
            assert_eq!(hit.json()["content"], miss.json()["content"]);
            assert_eq!(hit.json()["stop_reason"], "tool_use");
        }
    }
    assert_eq!(mock.model_calls(), 2);
    assert!(mock.requests().iter().all(|r| r.path == "/v1/chat/completions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_accounted_as_a_hit_with_what_it_saved() {
    let mock = Mock::start().await;
    let mg = start(&conf(&mock, "  ttl_s: 600").build());
    let body = chat(json!({}));
    send(&mg, CHAT, &[], &body).await;
    send(&mg, CHAT, &[], &body).await;
    send(&mg, CHAT, &[], &chat(json!({"stream": true}))).await;
    send(&mg, CHAT, &[], &chat(json!({"stream": true}))).await;
    let log = mg.wait_access_log(4);
    // 1000 input + 200 cached + 300 output at gpt-4o-mini's prices (cached at the input price).
    let cost = (1000.0 * 0.15 + 200.0 * 0.15 + 300.0 * 0.6) / 1e6;
    let misses: Vec<&Value> = log.iter().filter(|r| r["cache"] == "miss").collect();
    let hits: Vec<&Value> = log.iter().filter(|r| r["cache"] == "hit").collect();
    assert_eq!((misses.len(), hits.len()), (2, 2), "{log:?}");
    for m in &misses {
        assert!((m["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{m}");
        assert!(m.get("cache_saved_usd").is_none());
    }
    for h in &hits {
        assert_eq!((h["cost_usd"].as_f64(), h["input_tokens"].as_u64(), h["attempts"].as_u64()), (Some(0.0), Some(0), Some(0)), "{h}");
        assert!((h["cache_saved_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{h}");
        assert_eq!((h["model"].as_str(), h["status"].as_u64()), (Some("gpt-4o-mini"), Some(200)));
        assert!(h["upstream_ms"].is_null());
    }
    // The ledger has both, the hits marked.
    let ledger =
        std::fs::read_dir(mg.dir.path().join("state")).unwrap().filter_map(|e| e.ok()).find(|e| e.file_name().to_string_lossy().starts_with("ledger-"));
    let text = std::fs::read_to_string(ledger.expect("a ledger file").path()).unwrap();
    let entries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries.iter().filter(|e| e["cache_hit"] == true && e["cost_usd"] == 0.0 && e["input"] == 0).count(), 2, "{entries:?}");
    // Metrics.
    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_cache_requests_total", &[("result", "hit")]), 2.0);
    assert_eq!(metric_sum(&m, "modelgate_cache_requests_total", &[("result", "miss")]), 2.0);
    assert_eq!(metric_sum(&m, "modelgate_cache_stores_total", &[("outcome", "stored")]), 2.0);
    assert!((metric_sum(&m, "modelgate_cache_savings_usd_total", &[("model", "gpt-4o-mini")]) - 2.0 * cost).abs() < 1e-9, "{m}");
    assert!((metric_sum(&m, "modelgate_cost_usd_total", &[("model", "gpt-4o-mini")]) - 2.0 * cost).abs() < 1e-9);
    assert!(metric_sum(&m, "modelgate_cache_entries", &[]) >= 0.0);
    // /admin/usage and `modelgate cost`.
    let (_, usage) = http_get(&format!("{}/admin/usage?window=day", mg.admin)).unwrap();
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!((usage["total"]["requests"].as_u64(), usage["total"]["cache_hits"].as_u64()), (Some(4), Some(2)));
    assert!((usage["total"]["cache_savings_usd"].as_f64().unwrap() - 2.0 * cost).abs() < 1e-9);
    let out = std::process::Command::new(common::bin()).args(["cost", "--admin", &mg.admin]).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("response cache: 2 requests served from the cache"), "{out}");
    assert!(out.contains("CACHE HITS"), "{out}");
    // GET /admin/cache.
    let (status, stats) = http_get(&format!("{}/admin/cache", mg.admin)).unwrap();
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (stats["store"].as_str(), stats["entries"].as_u64(), stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some("memory"), Some(2), Some(2), Some(2)),
        "{stats}"
    );
    assert!(stats["bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_reserves_no_dollars_but_counts_as_a_request() {
    let mock = Mock::start().await;
    // One call costs $0.000375: the first fits the $0.0001 cap's worst
    // case (50 output tokens) and overspends it; then only hits pass.
    let budgets = "budgets:\n  - { name: tiny, window: day, limit_usd: 0.0001 }\n";
    let mg = start(&conf(&mock, "  ttl_s: 600").raw(budgets).build());
    let body = chat(json!({"max_tokens": 10}));
    assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "miss");
    let hit = send(&mg, CHAT, &[], &body).await;
    assert_eq!((hit.status, hit.cache()), (200, "hit"), "{}", hit.text());
    let other = send(&mg, CHAT, &[], &chat(json!({"max_tokens": 11}))).await;
    assert_eq!(other.status, 429, "a miss is refused by the spent budget: {}", other.text());
    assert_eq!(mock.model_calls(), 1);
    let (_, b) = http_get(&format!("{}/admin/budgets", mg.admin)).unwrap();
    let b: Value = serde_json::from_str(&b).unwrap();
    let tiny = b["budgets"].as_array().unwrap().iter().find(|x| x["name"] == "tiny").unwrap().clone();
    assert_eq!(tiny["requests"], 2, "{tiny}");
    assert_eq!(tiny["reserved_usd"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_count_hits() {
    let mock = Mock::start().await;
    let budgets = "budgets:\n  - { name: three, window: day, limit_requests: 3 }\n";
    let mg = start(&conf(&mock, "  ttl_s: 600").raw(budgets).build());
    let body = chat(json!({}));
    for expect in ["miss", "hit", "hit"] {
        let a = send(&mg, CHAT, &[], &body).await;
        assert_eq!((a.status, a.cache()), (200, expect));
    }
    let refused = send(&mg, CHAT, &[], &body).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.text().contains("budget `three`"), "{}", refused.text());
    assert_eq!(mock.model_calls(), 1);
}

async fn clear(mg: &Modelgate, query: &str) -> Value {
    let r = reqwest::Client::new().delete(format!("{}/admin/cache{query}", mg.admin)).header("authorization", "Bearer admin-secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_deletes_all_or_by_model_or_route_with_the_token() {
    let mock = Mock::start().await;
    let conf = conf(&mock, "  ttl_s: 600").route("name: big, match: { app: big }, target: gpt-4o").build();
    let mg = start(&conf);
    let fill = || async {
        send(&mg, CHAT, &[], &chat(json!({}))).await;
        send(&mg, CHAT, &[], &chat(json!({"model": "gpt-4o"}))).await;
        send(&mg, CHAT, &[("x-modelgate-app", "big")], &chat(json!({}))).await;
    };
    fill().await;
    let r = reqwest::Client::new().delete(format!("{}/admin/cache", mg.admin)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new().delete(format!("{}/admin/cache", mg.admin)).header("authorization", "Bearer wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(clear(&mg, "?model=gpt-4o").await["deleted"], 2);
    assert_eq!(send(&mg, CHAT, &[], &chat(json!({}))).await.cache(), "hit");
    assert_eq!(send(&mg, CHAT, &[], &chat(json!({"model": "gpt-4o"}))).await.cache(), "miss");
    assert_eq!(clear(&mg, "?route=big").await["deleted"], 0);
    send(&mg, CHAT, &[("x-modelgate-app", "big")], &chat(json!({}))).await;
    assert_eq!(clear(&mg, "?route=big&model=gpt-4o").await["deleted"], 1);
    assert_eq!(clear(&mg, "").await["deleted"], 2);
    assert_eq!(send(&mg, CHAT, &[], &chat(json!({}))).await.cache(), "miss");
    let (status, stats) = http_get(&format!("{}/admin/cache", mg.admin)).unwrap();
    assert_eq!(status, 200);
    assert!(stats.contains("\"store\":\"memory\""), "{stats}");
    assert!(metric_sum(&mg.metrics(), "modelgate_cache_evictions_total", &[("cause", "deleted")]) >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_are_coalesced_into_one_call() {
    let mock = Mock::start().await;
    let mg = start(&conf(&mock, "  ttl_s: 600").build());
    for (i, body) in [chat(json!({})), chat(json!({"stream": true}))].into_iter().enumerate() {
        mock.script([Script::Delay(Duration::from_millis(400))]);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let body = body.clone();
                let mg = &mg;
                async move { send(mg, CHAT, &[], &body).await }
            })
            .collect();
        let answers = futures_util::future::join_all(tasks).await;
        assert_eq!(mock.model_calls(), i + 1, "eight identical requests, one upstream call");
        assert!(answers.iter().all(|a| a.status == 200 && a.body == answers[0].body));
        assert_eq!(answers.iter().filter(|a| a.cache() == "hit").count(), 7);
    }
    assert!(metric_sum(&mg.metrics(), "modelgate_cache_coalesced_total", &[]) >= 14.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_cache_survives_a_restart() {
    let mock = Mock::start().await;
    let mut mg = start(&conf(&mock, "  ttl_s: 600\n  persist: true").build());
    let body = chat(json!({}));
    assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "miss");
    mg.signal("TERM");
    mg.wait_exit(Duration::from_secs(5));
    assert!(mg.dir.path().join("state/cache.bin").exists(), "{}", mg.stderr());
    mg.restart();
    assert_eq!(send(&mg, CHAT, &[], &body).await.cache(), "hit");
    assert_eq!(mock.model_calls(), 1);
}

fn redis_conf(mock: &Mock, redis: &Redis) -> String {
    conf(mock, "  store: redis\n  ttl_s: 600\n  scope: global")
        .raw(&format!("budget_store: {{ kind: redis, url: \"{}\", timeout_ms: 200 }}\n", redis.url()))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_hits_through_redis_and_redis_going_away_is_only_misses() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let a = start(&redis_conf(&mock, &redis));
    let b = start(&redis_conf(&mock, &redis));
    let body = chat(json!({}));
    let stream = chat(json!({"stream": true}));
    let first = send(&a, CHAT, &[], &body).await;
    assert_eq!(first.cache(), "miss");
    let s1 = send(&a, CHAT, &[], &stream).await;
    // The store is written off the response path: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shared = send(&b, CHAT, &[], &body).await;
    assert_eq!((shared.cache(), shared.body == first.body), ("hit", true));
    let s2 = send(&b, CHAT, &[], &stream).await;
    assert_eq!((s2.cache(), s2.text() == s1.text()), ("hit", true));
    assert_eq!(mock.model_calls(), 2);
    let keys = redis.cli(&["--scan", "--pattern", "{modelgate}:cache:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    let ttl: i64 = redis.cli(&["ttl", keys.lines().next().unwrap()]).trim().parse().unwrap();
    assert!(ttl > 500 && ttl <= 600, "{ttl}");

    // Redis away: misses, never errors.
    redis.stop();
    for _ in 0..3 {
        let r = send(&b, CHAT, &[], &body).await;
        assert_eq!((r.status, r.cache()), (200, "miss"), "{}", r.text());
    }
    assert_eq!(mock.model_calls(), 5);
    assert!(metric_sum(&b.metrics(), "modelgate_cache_store_errors_total", &[]) >= 1.0);
    // Back (its data kept by AOF): hits again.
    let redis = Redis::start(dir.path());
    let mut hit = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if send(&a, CHAT, &[], &body).await.cache() == "hit" {
            hit = true;
            break;
        }
    }
    assert!(hit, "hits again once Redis is back: {}", a.stderr());
    let r = send(&b, CHAT, &[], &stream).await;
    assert!(r.status == 200 && (r.cache() == "hit" || r.cache() == "miss"));
    drop(redis);
}

#[test]
fn config_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(common::bin()).args(["check", "-c"]).arg(&path).output().unwrap();
        assert!(!out.status.success());
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let out = check("cache: { store: redis }\n");
    assert!(out.contains("cache.store") && out.contains("budget_store"), "{out}");
    let out = check("cache: { ttl_s: 0, scope: team, min_temperature_cacheable: 3, store: disk, key_headers: [\"bad header\"] }\n");
    for want in ["cache.ttl_s", "cache.scope", "cache.min_temperature_cacheable", "cache.store", "cache.key_headers[0]"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let out = check("cache: { max_bytes: 1000 }\n");
    assert!(out.contains("cache.max_bytes"), "{out}");
    let out = check("models: { m: { provider: p, input_usd_per_mtok: 1, output_usd_per_mtok: 1 } }\nproviders: { p: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" } }\nroutes:\n  - { name: r, target: m, cache: { ttl: 5 } }\n");
    assert!(out.contains("routes[0].cache") && out.contains("ttl"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_get_identical_answers_from_the_cache() {
    let mock = Mock::start().await;
    let conf = conf(&mock, "  ttl_s: 600\n  min_temperature_cacheable: 1").raw("cross_provider_client_keys: true").build();
    let mg = start(&conf);
    let stdout = common::run_python("sdk_cache.py", &mg, &[]).await;
    assert!(stdout.contains("all SDK cache checks passed"));
    // Each distinct request reached the provider once (the script counts them).
    let distinct: usize = stdout.lines().find_map(|l| l.strip_prefix("distinct requests: ")).and_then(|n| n.trim().parse().ok()).unwrap();
    assert_eq!(mock.model_calls(), distinct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_calls_are_cached_per_method_json_and_stream() {
    let mock = Mock::start().await;
    let conf = conf(&mock, "  ttl_s: 600")
        .provider("gemini", common::Kind::Gemini, &mock)
        .model("gemini-flash", "gemini")
        .id("gemini-2.5-flash")
        .prices(0.3, 2.5)
        .build();
    let mg = start(&conf);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}], "generationConfig": {"temperature": 0}});
    let json_path = "/gemini/v1beta/models/gemini-flash:generateContent";
    let sse_path = "/gemini/v1beta/models/gemini-flash:streamGenerateContent?alt=sse";
    for path in [json_path, sse_path] {
        let miss = send(&mg, path, &[], &body).await;
        let hit = send(&mg, path, &[], &body).await;
        assert_eq!((miss.status, miss.cache(), hit.cache()), (200, "miss", "hit"), "{path}: {}", miss.text());
        assert_eq!(hit.body, miss.body, "{path}");
    }
    assert_eq!(mock.model_calls(), 2);
    // A temperature in generationConfig above the default threshold bypasses.
    let warm = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}], "generationConfig": {"temperature": 0.9}});
    assert_eq!(send(&mg, json_path, &[], &warm).await.cache(), "bypass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_in_a_split_route_keeps_its_arm_and_request_id_in_the_ledger() {
    let mock = Mock::start().await;
    // Both arms serve gpt-4o-mini, so whichever arm a request lands in, the
    // second identical request is a hit.
    let yaml = conf(&mock, "  ttl_s: 600")
        .route("name: rollout, match: { app: ab }, split: [{ model: gpt-4o-mini, weight: 50, name: left }, { model: gpt-4o-mini, weight: 50, name: right }]")
        .build();
    let mg = start(&yaml);
    let body = chat(json!({}));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let a = send(&mg, CHAT, &[("x-modelgate-app", "ab")], &body).await;
        assert_eq!(a.status, 200);
        ids.push(a.headers["x-modelgate-request-id"].to_str().unwrap().to_string());
    }
    let log = mg.wait_access_log(2);
    assert_eq!((log[0]["cache"].as_str(), log[1]["cache"].as_str()), (Some("miss"), Some("hit")), "{log:?}");
    let ledger =
        std::fs::read_dir(mg.dir.path().join("state")).unwrap().filter_map(|e| e.ok()).find(|e| e.file_name().to_string_lossy().starts_with("ledger-"));
    let text = std::fs::read_to_string(ledger.expect("a ledger file").path()).unwrap();
    let entries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (i, rec) in log.iter().enumerate() {
        let e =
            entries.iter().find(|e| e["request_id"] == ids[i].as_str()).unwrap_or_else(|| panic!("no ledger entry with request id {}: {entries:?}", ids[i]));
        assert!(rec["arm"].is_string(), "{rec}");
        assert_eq!(e["arm"], rec["arm"], "the ledger's arm is the one the request landed in");
        assert_eq!(e["cache_hit"].as_bool().unwrap_or(false), i == 1);
    }
}
