//! End-to-end tests of the base-URL gateway: the real binary, a scripted mock
//! provider, and plain HTTP clients (the SDK tests are in sdk_e2e.rs).

mod common;

use std::time::Duration;

use common::{metric_sum, standard, Config, Kind, Mock, Modelgate, Script};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn setup() -> (Mock, Modelgate) {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&standard(&mock).build());
    (mock, mg)
}

/// POST a JSON body and return the response (any status).
async fn post_json(url: impl reqwest::IntoUrl, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.expect("request to modelgate")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

const MINI_COST: f64 = (1000.0 * 0.15 + 200.0 * 0.075 + 300.0 * 0.6) / 1e6;

#[tokio::test]
async fn openai_request_is_rewritten_and_costed() {
    let (mock, mg) = setup().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3, "x_vendor_field": {"keep": [1, 2]}});
    let r = client()
        .post(format!("{}/v1/chat/completions", mg.gateway))
        .header("authorization", "Bearer sk-client")
        .header("x-modelgate-app", "billing")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o-mini");
    assert_eq!(header(&r, "x-modelgate-provider"), "openai");
    assert_eq!(header(&r, "x-modelgate-route"), "mini");
    assert_eq!(header(&r, "x-modelgate-attempts"), "1");
    let cost: f64 = header(&r, "x-modelgate-cost-usd").parse().unwrap();
    assert!((cost - MINI_COST).abs() < 1e-12, "cost {cost}");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "gpt-4o-mini");

    let up = mock.last();
    assert_eq!(up.path, "/v1/chat/completions");
    let mut want = body.clone();
    want["model"] = json!("gpt-4o-mini");
    assert_eq!(up.json(), want, "only the model changes");
    assert_eq!(up.headers["authorization"], "Bearer sk-client", "client auth forwarded when no key is configured");
    assert!(up.headers.get("x-modelgate-app").is_none(), "x-modelgate-* headers are stripped");
    assert_eq!(up.headers["host"], mock.addr.to_string());

    let log = mg.wait_access_log(1);
    let rec = &log[0];
    assert_eq!(rec["app"], "billing");
    assert_eq!(rec["requested_model"], "gpt-4o");
    assert_eq!(rec["model"], "gpt-4o-mini");
    assert_eq!(rec["route"], "mini");
    assert_eq!(rec["status"], 200);
    assert_eq!((rec["input_tokens"].as_u64(), rec["cached_input_tokens"].as_u64(), rec["output_tokens"].as_u64()), (Some(1000), Some(200), Some(300)));
    let logged = serde_json::to_string(rec).unwrap();
    assert!(!logged.contains("sk-client") && !logged.contains("\"hi\""), "no keys or prompt text in the access log");

    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_requests_total", &[("dialect", "openai"), ("model", "gpt-4o-mini"), ("route", "mini"), ("status", "200")]), 1.0);
    assert_eq!(metric_sum(&m, "modelgate_tokens_total", &[("model", "gpt-4o-mini"), ("kind", "input")]), 1000.0);
    assert_eq!(metric_sum(&m, "modelgate_tokens_total", &[("model", "gpt-4o-mini"), ("kind", "cached")]), 200.0);
    assert_eq!(metric_sum(&m, "modelgate_tokens_total", &[("model", "gpt-4o-mini"), ("kind", "output")]), 300.0);
    assert!((metric_sum(&m, "modelgate_cost_usd_total", &[("model", "gpt-4o-mini")]) - MINI_COST).abs() < 1e-12);
    assert_eq!(metric_sum(&m, "modelgate_overhead_seconds_count", &[]), 1.0);
    assert_eq!(metric_sum(&m, "modelgate_upstream_duration_seconds_count", &[]), 1.0);
}

#[tokio::test]
async fn unmatched_request_is_forwarded_byte_identical() {
    let (mock, mg) = setup().await;
    // Odd spacing and key order must survive: nothing is re-serialized.
    let raw = "{ \"messages\": [ {\"role\":\"user\",\"content\":\"\\u00e9\"} ],\n  \"model\" : \"o3\", \"n\": 1.50 }";
    let r = client().post(format!("{}/v1/chat/completions", mg.gateway)).header("content-type", "application/json").body(raw).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-modelgate-route"), "none");
    assert_eq!(header(&r, "x-modelgate-model"), "o3");
    assert!(r.headers().get("x-modelgate-cost-usd").is_none(), "no price is known for an unconfigured model");
    assert_eq!(&mock.last().body[..], raw.as_bytes());
}

#[tokio::test]
async fn anthropic_request_is_rewritten_and_costed() {
    let (mock, mg) = setup().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief", "messages": [{"role": "user", "content": "hi"}]});
    for path in ["/anthropic/v1/messages", "/v1/messages"] {
        let r = client()
            .post(format!("{}{path}", mg.gateway))
            .header("x-api-key", "sk-ant-client")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-modelgate-model"), "claude-haiku");
        assert_eq!(header(&r, "x-modelgate-provider"), "anthropic");
        let cost: f64 = header(&r, "x-modelgate-cost-usd").parse().unwrap();
        assert!((cost - (1000.0 * 1.0 + 200.0 * 0.1 + 300.0 * 5.0) / 1e6).abs() < 1e-12, "cost {cost}");
        let up = mock.last();
        assert_eq!(up.path, "/v1/messages");
        assert_eq!(up.json()["model"], "claude-haiku-4-5-20251001");
        assert_eq!(up.json()["system"], "be brief");
        assert_eq!(up.headers["x-api-key"], "sk-ant-client");
        assert_eq!(up.headers["anthropic-version"], "2023-06-01");
    }
}

/// Read an SSE response's body chunk by chunk.
struct Chunks(std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>);

impl Chunks {
    fn new(r: reqwest::Response) -> Self {
        Chunks(Box::pin(r.bytes_stream()))
    }
    async fn until(&mut self, needle: &str, acc: &mut String) {
        while !acc.contains(needle) {
            let c = tokio::time::timeout(Duration::from_secs(5), self.0.next()).await.expect("stream stalled").expect("stream ended").unwrap();
            acc.push_str(std::str::from_utf8(&c).unwrap());
        }
    }
    async fn rest(&mut self, acc: &mut String) {
        while let Some(c) = tokio::time::timeout(Duration::from_secs(5), self.0.next()).await.expect("stream stalled") {
            match c {
                Ok(c) => acc.push_str(std::str::from_utf8(&c).unwrap()),
                Err(_) => break,
            }
        }
    }
}

#[tokio::test]
async fn openai_stream_is_forwarded_event_by_event_and_usage_is_counted() {
    let (mock, mg) = setup().await;
    mock.script([Script::Gated]);
    let r =
        post_json(format!("{}/v1/chat/completions", mg.gateway), &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o-mini");
    let mut chunks = Chunks::new(r);
    let mut text = String::new();
    // The mock holds the rest of the stream until released: the first event
    // must already be here.
    chunks.until("\"role\":\"assistant\"", &mut text).await;
    assert!(!text.contains("Hello"));
    mock.release();
    chunks.rest(&mut text).await;
    assert!(text.contains("Hello") && text.contains(" from the mock"));
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(!text.contains("prompt_tokens"), "the usage chunk modelgate asked for is not shown to a client that did not");
    let up = mock.last().json();
    assert_eq!(up["stream_options"]["include_usage"], true, "modelgate asks for usage upstream");

    let log = mg.wait_access_log(1);
    assert_eq!(log[0]["usage_reported"], true);
    assert_eq!(log[0]["output_tokens"], 300);
    assert!((log[0]["cost_usd"].as_f64().unwrap() - MINI_COST).abs() < 1e-12);
}

#[tokio::test]
async fn openai_stream_keeps_usage_chunk_when_client_asked() {
    let (_mock, mg) = setup().await;
    let r = post_json(
        format!("{}/v1/chat/completions", mg.gateway),
        &json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("\"prompt_tokens\":1200"));
}

#[tokio::test]
async fn anthropic_stream_events_pass_through_and_usage_merges() {
    let (mock, mg) = setup().await;
    mock.script([Script::Gated]);
    let r = post_json(
        format!("{}/anthropic/v1/messages", mg.gateway),
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut chunks = Chunks::new(r);
    let mut text = String::new();
    chunks.until("event: message_start", &mut text).await;
    chunks.until("\n\n", &mut text).await;
    assert!(!text.contains("content_block_start"));
    mock.release();
    chunks.rest(&mut text).await;
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(
        names,
        ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    );
    let log = mg.wait_access_log(1);
    assert_eq!((log[0]["input_tokens"].as_u64(), log[0]["cached_input_tokens"].as_u64(), log[0]["output_tokens"].as_u64()), (Some(1000), Some(200), Some(300)));
}

#[tokio::test]
async fn responses_embeddings_and_passthrough_endpoints() {
    let (mock, mg) = setup().await;
    let c = client();
    let r = post_json(format!("{}/v1/responses", mg.gateway), &json!({"model": "gpt-4o", "input": "hi"})).await;
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o-mini");
    assert!(r.headers().contains_key("x-modelgate-cost-usd"));
    assert_eq!(mock.last().path, "/v1/responses");
    let r = post_json(format!("{}/v1/responses", mg.gateway), &json!({"model": "gpt-4o", "input": "hi", "stream": true})).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("response.completed"));
    assert!(mock.last().json().get("stream_options").is_none(), "the Responses API reports usage itself");
    let r = post_json(format!("{}/v1/embeddings", mg.gateway), &json!({"model": "text-embedding-3-small", "input": "hi"})).await;
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{}/v1/models?limit=5", mg.gateway)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-modelgate-route"), "none");
    assert_eq!(mock.last().path, "/v1/models?limit=5");
    // Lines are written as each request ends, not necessarily in order.
    let log = mg.wait_access_log(4);
    let line =
        |api: &str, stream: bool| log.iter().find(|l| l["api"] == api && l["stream"] == stream).unwrap_or_else(|| panic!("no {api} line in {log:?}")).clone();
    assert_eq!(line("responses", true)["output_tokens"], 300, "usage read from the response.completed event");
    assert_eq!(line("embeddings", false)["input_tokens"], 1200, "embeddings usage");
}

#[tokio::test]
async fn large_bodies_are_rewritten_intact_and_oversized_ones_get_413() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&standard(&mock).raw("max_body_bytes: 10485760").build());
    let c = client();
    for size in [1usize << 20, 8 << 20] {
        let filler: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": filler}]});
        let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &body).await;
        assert_eq!(r.status(), 200, "{size} bytes");
        let up = mock.last().json();
        assert_eq!(up["model"], "gpt-4o-mini");
        assert_eq!(up["messages"], body["messages"], "{size}-byte content arrives intact");
    }
    let big = format!("{{\"model\":\"gpt-4o\",\"x\":\"{}\"}}", "a".repeat(11 << 20));
    let calls = mock.calls();
    let r = c.post(format!("{}/v1/chat/completions", mg.gateway)).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "body_too_large");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_body_bytes"));
    let r = c.post(format!("{}/anthropic/v1/messages", mg.gateway)).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e["type"].as_str(), e["error"]["type"].as_str()), (Some("error"), Some("request_too_large")));
    // Chunked upload without a content-length is cut off at the limit too.
    let stream = futures_util::stream::iter((0..12).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1 << 20]))));
    let r = c.post(format!("{}/v1/chat/completions", mg.gateway)).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(mock.calls(), calls, "nothing oversized reached the provider");
}

#[tokio::test]
async fn bad_requests_get_errors_in_the_clients_dialect() {
    let (mock, mg) = setup().await;
    let c = client();
    let r = c.post(format!("{}/v1/chat/completions", mg.gateway)).body("{\"model\": \"gpt-4o\",").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{e}");
    let r = c.post(format!("{}/anthropic/v1/messages", mg.gateway)).body("[]").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("JSON object"));
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &json!({"model": 4})).await;
    assert_eq!(r.status(), 400);
    // A body that is not UTF-8 (JSON text must be), in both dialects.
    let latin1 = b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}".to_vec();
    let r = c.post(format!("{}/v1/chat/completions", mg.gateway)).body(latin1.clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("not valid UTF-8"), "{e}");
    let r = c.post(format!("{}/anthropic/v1/messages", mg.gateway)).body(latin1).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e["type"].as_str(), e["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")));
    assert!(e["error"]["message"].as_str().unwrap().contains("not valid UTF-8"), "{e}");
    let r = c.get(format!("{}/nope", mg.gateway)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("/v1"));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn configured_keys_replace_client_auth_and_missing_keys_fail_clearly() {
    let mock = Mock::start().await;
    let yaml = Config::new()
        .provider("openai", Kind::OpenAi, &mock)
        .with("api_key_env: MG_TEST_OPENAI_KEY")
        .provider("anthropic", Kind::Anthropic, &mock)
        .with("api_key_env: MG_TEST_ANTHROPIC_KEY_UNSET")
        .build();
    let mg = Modelgate::start_with_env(&yaml, &[("MG_TEST_OPENAI_KEY", "sk-injected")]);
    assert!(mg.stderr().contains("MG_TEST_ANTHROPIC_KEY_UNSET"), "startup warns about the unset key");
    let c = client();
    let r = c
        .post(format!("{}/v1/chat/completions", mg.gateway))
        .header("authorization", "Bearer sk-client")
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.last().headers["authorization"], "Bearer sk-injected");
    let r = c
        .post(format!("{}/anthropic/v1/messages", mg.gateway))
        .header("x-api-key", "sk-client")
        .json(&json!({"model": "claude-x", "max_tokens": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("MG_TEST_ANTHROPIC_KEY_UNSET"));
    assert_eq!(mock.calls(), 1, "the request without a key never reached the provider");
}

#[tokio::test]
async fn retryable_failures_fall_back_and_client_errors_do_not() {
    let mock = Mock::start().await;
    // One try per model: these failures go straight to the fallback.
    let mg = Modelgate::start(&Config::openai_anthropic(&mock).standard_models().raw("retry: { max_attempts: 1 }").build());
    let req = json!({"model": "gpt-4o", "messages": []});
    mock.script([Script::Status(503)]);
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &req).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-modelgate-model"), "gpt-4o-mini");
    assert_eq!(header(&r, "x-modelgate-attempts"), "2");
    let models: Vec<String> = mock.requests().iter().map(|r| r.json()["model"].as_str().unwrap().to_string()).collect();
    assert_eq!(models, ["gpt-4o", "gpt-4o-mini"]);
    mock.script([Script::Status(400)]);
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &req).await;
    assert_eq!(r.status(), 400, "a client error is returned, not retried");
    assert_eq!(mock.calls(), 3);
    // Every attempt fails: the last upstream answer comes back.
    mock.script([Script::Status(429), Script::Status(503)]);
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &req).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-modelgate-attempts")), (503, "2"));
}

#[tokio::test]
async fn unreachable_and_slow_providers_get_502_and_504() {
    let mock = Mock::start().await;
    let dead = common::free_port();
    let yaml = Config::new()
        .raw("retry: { max_attempts: 1 }")
        .provider("openai", Kind::OpenAi, format!("http://127.0.0.1:{dead}"))
        .provider("anthropic", Kind::Anthropic, &mock)
        .with("first_byte_timeout_ms: 300")
        .build();
    let mg = Modelgate::start(&yaml);
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &json!({"model": "gpt-4o"})).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "connect");
    assert!(e["error"]["message"].as_str().unwrap().contains("tried: unconfigured model gpt-4o: connect"), "{e}");
    mock.script([Script::Delay(Duration::from_secs(2))]);
    let r = post_json(format!("{}/anthropic/v1/messages", mg.gateway), &json!({"model": "claude-x", "max_tokens": 5})).await;
    assert_eq!(r.status(), 504);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let (mock, mg) = setup().await;
    mock.script([Script::Cut]);
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &json!({"model": "gpt-4o", "stream": true})).await;
    let mut text = String::new();
    Chunks::new(r).rest(&mut text).await;
    assert!(text.contains("\"role\":\"assistant\""));
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "a cut stream must not look complete");
    mock.script([Script::Cut]);
    let r = post_json(format!("{}/anthropic/v1/messages", mg.gateway), &json!({"model": "claude-x", "stream": true, "max_tokens": 5})).await;
    let mut text = String::new();
    Chunks::new(r).rest(&mut text).await;
    assert!(text.contains("event: error"), "{text}");
    assert!(metric_sum(&mg.metrics(), "modelgate_stream_errors_total", &[]) >= 2.0);
}

async fn routed_model(mg: &Modelgate) -> String {
    let r = post_json(format!("{}/v1/chat/completions", mg.gateway), &json!({"model": "gpt-4o"})).await;
    header(&r, "x-modelgate-model").to_string()
}

async fn eventually(mg: &Modelgate, want: &str) -> bool {
    for _ in 0..100 {
        if routed_model(mg).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn hot_reload_applies_good_configs_and_keeps_serving_on_bad_ones() {
    let (mock, mg) = setup().await;
    assert_eq!(routed_model(&mg).await, "gpt-4o-mini");
    let original = std::fs::read_to_string(mg.config_path()).unwrap();

    // A broken file: the old routes keep serving, the failure is counted.
    std::fs::write(mg.config_path(), original.replace("target: gpt-4o-mini", "target: no-such-model")).unwrap();
    let mut failures = 0.0;
    // Up to 15 s: on a loaded box the watcher's event can take seconds.
    for _ in 0..300 {
        failures = metric_sum(&mg.metrics(), "modelgate_config_reload_failures_total", &[]);
        if failures >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failures, 1.0);
    assert!(mg.stderr().contains("routes[0].target: unknown model `no-such-model`"), "{}", mg.stderr());
    assert_eq!(routed_model(&mg).await, "gpt-4o-mini");

    // Fixed (with a different route): applied without a restart.
    std::fs::write(mg.config_path(), original.replace("target: gpt-4o-mini", "target: gpt-4o")).unwrap();
    assert!(eventually(&mg, "gpt-4o").await, "the new route applies");
    assert!(metric_sum(&mg.metrics(), "modelgate_config_reloads_total", &[]) >= 1.0);

    // SIGHUP re-reads the file too.
    std::fs::write(mg.config_path(), &original).unwrap();
    mg.signal("HUP");
    assert!(eventually(&mg, "gpt-4o-mini").await);
    assert!(mock.calls() > 0);
}
