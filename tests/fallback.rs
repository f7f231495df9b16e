//! Fallback, same-model retries, timeouts, circuit breakers and provider
//! health checks through the release binary. Two mocks per test: the
//! *primary* (providers `openai` and `anthropic`, models gpt-4o and
//! claude-sonnet) and the *fallback* (providers `openai-fb` and
//! `anthropic-fb`, models gpt-4o-mini and claude-haiku), so each test can
//! tell which provider received what.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, http_get, metric_sum, Config, Kind, Mock, Modelgate, Script};
use futures_util::StreamExt;
use serde_json::{json, Value};

const ANSWER: &str = "Hello from the mock";

/// The load test takes this exclusively; the others share it, so timing
/// assertions (timeouts, breaker cooldowns) never run under that load.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    OpenAi,
    Anthropic,
}
use Client::{Anthropic, OpenAi};

/// Providers on the primary (a mock's URL, or a closed port) and on the
/// fallback mock, and the four models; `gpt4o` and `sonnet` are extra fields
/// for the primary's two. Same-model retries are off unless a test turns
/// them on.
fn config(primary: &str, fallback: &Mock, gpt4o: &str, sonnet: &str) -> Config {
    Config::new()
        .raw("retry: { max_attempts: 1 }")
        .provider("openai", Kind::OpenAi, primary)
        .provider("anthropic", Kind::Anthropic, primary)
        .provider("openai-fb", Kind::OpenAi, fallback)
        .provider("anthropic-fb", Kind::Anthropic, fallback)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with(gpt4o)
        .model("claude-sonnet", "anthropic")
        .id("claude-sonnet-4-5")
        .prices(3.0, 15.0)
        .with(sonnet)
        .model("gpt-4o-mini", "openai-fb")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic-fb")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
}

/// (path, upstream model id) a model's provider receives.
fn upstream_of(model: &str) -> (&'static str, &'static str) {
    match model {
        "gpt-4o" => ("/v1/chat/completions", "gpt-4o"),
        "claude-sonnet" => ("/v1/messages", "claude-sonnet-4-5"),
        "gpt-4o-mini" => ("/v1/chat/completions", "gpt-4o-mini"),
        "claude-haiku" => ("/v1/messages", "claude-haiku-4-5-20251001"),
        other => panic!("no upstream for {other}"),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    elapsed: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The answer's text, only when it is complete: a non-streamed answer
    /// in the client's shape, or a stream that ends with its dialect's final
    /// event (`[DONE]`, `message_stop`) and has no error event.
    fn answer(&self, c: Client, stream: bool) -> Option<String> {
        if !stream {
            let v = self.json();
            return match c {
                OpenAi => v["choices"][0]["message"]["content"].as_str().map(String::from),
                Anthropic => Some(v["content"].as_array()?.iter().filter_map(|b| b["text"].as_str()).collect()),
            };
        }
        let evs = events(&self.text);
        let mut out = String::new();
        match c {
            OpenAi => {
                let (last, rest) = evs.split_last()?;
                if last.1 != "[DONE]" {
                    return None;
                }
                for (_, d) in rest {
                    let v: Value = serde_json::from_str(d).ok()?;
                    if v.get("error").is_some() {
                        return None;
                    }
                    out += v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                }
            }
            Anthropic => {
                if evs.last()?.0 != "message_stop" {
                    return None;
                }
                for (name, d) in &evs {
                    let v: Value = serde_json::from_str(d).ok()?;
                    if name == "error" || v["type"] == "error" {
                        return None;
                    }
                    if v["type"] == "content_block_delta" {
                        out += v["delta"]["text"].as_str().unwrap_or("");
                    }
                }
            }
        }
        Some(out)
    }
}

/// Server-sent events as (event name, data).
fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (mut name, mut data) = (String::new(), String::new());
            for l in e.lines() {
                if let Some(v) = l.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (name, data)
        })
        .collect()
}

/// A running modelgate and an HTTP client for it.
struct Gate {
    mg: Modelgate,
    http: reqwest::Client,
}

impl Gate {
    fn start(yaml: &str) -> Gate {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(64).build().unwrap();
        Gate { mg: Modelgate::start(yaml), http }
    }

    async fn ask(&self, c: Client, model: &str, stream: bool) -> Answer {
        self.ask_with(c, model, stream, &[]).await
    }

    /// One chat call in the client's dialect; the body is read to its end
    /// or to the first transport error (a cut stream). A request that
    /// fails outright has status 0.
    async fn ask_with(&self, c: Client, model: &str, stream: bool, headers: &[(&str, &str)]) -> Answer {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let (path, body) = match c {
            OpenAi => ("/v1/chat/completions", json!({"model": model, "stream": stream, "messages": msgs})),
            Anthropic => ("/anthropic/v1/messages", json!({"model": model, "stream": stream, "max_tokens": 50, "messages": msgs})),
        };
        let started = Instant::now();
        let mut rb = self.http.post(format!("{}{path}", self.mg.gateway)).json(&body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Answer { status: 0, headers: Default::default(), text: e.to_string(), elapsed: started.elapsed() },
        };
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let mut body = Vec::new();
        let mut chunks = r.bytes_stream();
        while let Some(Ok(c)) = chunks.next().await {
            body.extend_from_slice(&c);
        }
        Answer { status, headers, text: String::from_utf8_lossy(&body).into_owned(), elapsed: started.elapsed() }
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.mg.metrics(), name, labels)
    }

    fn health(&self) -> Value {
        let (status, body) = http_get(&format!("{}/admin/health", self.mg.admin)).expect("GET /admin/health");
        assert_eq!(status, 200, "/admin/health: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/admin/health is not JSON ({e}): {body}"))
    }

    /// `/admin/health`'s entry for a model (Null until it has been tried).
    fn model_health(&self, model: &str) -> Value {
        self.health()["models"].as_array().and_then(|ms| ms.iter().find(|m| m["model"] == model).cloned()).unwrap_or(Value::Null)
    }

    fn provider_health(&self, provider: &str) -> Value {
        self.health()["providers"].as_array().and_then(|ps| ps.iter().find(|p| p["provider"] == provider).cloned()).unwrap_or(Value::Null)
    }
}

/// Poll `cond` every 25 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One scripted primary failure: what the client asks, where it falls back,
/// and the attempt outcomes the primary's failure may be counted as
/// (non-streamed, streamed; empty: not checked).
struct Case {
    name: &'static str,
    /// `None`: the primary's providers point at a closed port.
    script: Option<Script>,
    client: Client,
    model: &'static str,
    fallback: &'static str,
    outcomes: [&'static [&'static str]; 2],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retryable_primary_failure_is_served_by_the_fallback() {
    let _shared = LOAD.read().await;
    let status = |c| Some(Script::Status(c));
    let cases = [
        Case { name: "429", script: status(429), client: OpenAi, model: "gpt-4o", fallback: "gpt-4o-mini", outcomes: [&["429"], &["429"]] },
        Case { name: "500", script: status(500), client: OpenAi, model: "gpt-4o", fallback: "claude-haiku", outcomes: [&["5xx"], &["5xx"]] },
        Case { name: "503", script: status(503), client: OpenAi, model: "gpt-4o", fallback: "gpt-4o-mini", outcomes: [&["5xx"], &["5xx"]] },
        Case { name: "529", script: status(529), client: OpenAi, model: "gpt-4o", fallback: "claude-haiku", outcomes: [&["5xx"], &["5xx"]] },
        Case {
            name: "reset",
            script: Some(Script::Reset),
            client: OpenAi,
            model: "gpt-4o",
            fallback: "gpt-4o-mini",
            outcomes: [&["io", "connect"], &["io", "connect"]],
        },
        Case { name: "refused", script: None, client: OpenAi, model: "gpt-4o", fallback: "claude-haiku", outcomes: [&["connect"], &["connect"]] },
        Case {
            name: "first-byte timeout",
            script: Some(Script::Delay(Duration::from_secs(2))),
            client: OpenAi,
            model: "gpt-4o",
            fallback: "gpt-4o-mini",
            outcomes: [&["first_byte_timeout"], &["first_byte_timeout"]],
        },
        Case {
            name: "error event",
            script: Some(Script::ErrorEvent),
            client: OpenAi,
            model: "gpt-4o",
            fallback: "claude-haiku",
            outcomes: [&["invalid_body", "stream_error_event"], &["stream_error_event"]],
        },
        Case {
            name: "invalid body",
            script: Some(Script::InvalidBody),
            client: OpenAi,
            model: "gpt-4o",
            fallback: "gpt-4o-mini",
            outcomes: [&["invalid_body"], &[]],
        },
        // Anthropic clients on an Anthropic-kind primary: its 529
        // overloaded_error, and its `event: error` first event.
        Case {
            name: "anthropic 529",
            script: status(529),
            client: Anthropic,
            model: "claude-sonnet",
            fallback: "claude-haiku",
            outcomes: [&["5xx"], &["5xx"]],
        },
        Case {
            name: "anthropic error event",
            script: Some(Script::ErrorEvent),
            client: Anthropic,
            model: "claude-sonnet",
            fallback: "gpt-4o-mini",
            outcomes: [&["invalid_body", "stream_error_event"], &["stream_error_event"]],
        },
    ];
    for case in cases {
        // A fresh modelgate per case: no pooled connection to the primary,
        // no breaker state carried over.
        let (primary, fb) = (Mock::start().await, Mock::start().await);
        let primary_url = match case.script {
            Some(_) => primary.url(),
            None => format!("http://127.0.0.1:{}", free_port()),
        };
        let extra = format!("fallbacks: [{}], first_byte_timeout_ms: 300", case.fallback);
        let g = Gate::start(&config(&primary_url, &fb, &extra, &extra).build());
        let (fb_path, fb_id) = upstream_of(case.fallback);
        let (primary_path, primary_id) = upstream_of(case.model);
        for (n, stream) in [false, true].into_iter().enumerate() {
            let what = format!("{} ({})", case.name, if stream { "stream" } else { "json" });
            primary.script(case.script.clone());
            let counted = |m: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
                let key = if name == "modelgate_fallbacks_total" { "reason" } else { "outcome" };
                case.outcomes[n].iter().map(|o| metric_sum(m, name, &[labels, &[(key, *o)]].concat())).sum()
            };
            let before = g.mg.metrics();
            let a = g.ask(case.client, case.model, stream).await;
            assert_eq!(a.status, 200, "{what}: {}", a.text);
            assert_eq!(a.header("x-modelgate-model"), case.fallback, "{what}");
            assert_eq!(a.header("x-modelgate-attempts"), "2", "{what}");
            assert_eq!(a.answer(case.client, stream).as_deref(), Some(ANSWER), "{what}: incomplete answer:\n{}", a.text);
            // The primary was tried once, the fallback got the request.
            let expect_primary = if case.script.is_some() { n + 1 } else { 0 };
            assert_eq!(primary.model_calls(), expect_primary, "{what}: calls to the primary");
            if expect_primary > 0 {
                assert_eq!((primary.last().path.as_str(), primary.last().json()["model"].as_str()), (primary_path, Some(primary_id)), "{what}");
            }
            assert_eq!(fb.model_calls(), n + 1, "{what}: calls to the fallback");
            let sent = fb.last();
            assert_eq!((sent.path.as_str(), sent.json()["model"].as_str(), sent.json()["stream"] == json!(true)), (fb_path, Some(fb_id), stream), "{what}");
            if case.name == "first-byte timeout" {
                assert!(a.elapsed < Duration::from_millis(1500), "{what}: the fallback answered only after {:?}", a.elapsed);
            }
            // The primary's failure is counted under its outcome, and so is
            // the move to the fallback.
            let m = g.mg.metrics();
            if !case.outcomes[n].is_empty() {
                let attempts = [("model", case.model)];
                let delta = counted(&m, "modelgate_attempts_total", &attempts) - counted(&before, "modelgate_attempts_total", &attempts);
                assert_eq!(delta, 1.0, "{what}: modelgate_attempts_total{{model={},outcome in {:?}}}:\n{m}", case.model, case.outcomes[n]);
                let moves = [("from", case.model), ("to", case.fallback)];
                let delta = counted(&m, "modelgate_fallbacks_total", &moves) - counted(&before, "modelgate_fallbacks_total", &moves);
                assert_eq!(delta, 1.0, "{what}: modelgate_fallbacks_total{{reason in {:?}}}:\n{m}", case.outcomes[n]);
            }
            assert_eq!(metric_sum(&m, "modelgate_fallbacks_total", &[("from", case.model), ("to", case.fallback)]), (n + 1) as f64, "{what}:\n{m}");
        }
        let log = g.mg.wait_access_log(2);
        assert_eq!(log.len(), 2, "{}", case.name);
        for rec in &log {
            assert_eq!(
                (rec["status"].as_u64(), rec["attempts"].as_u64(), rec["model"].as_str()),
                (Some(200), Some(2), Some(case.fallback)),
                "{}: {rec}",
                case.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_returned_unretried() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let g = Gate::start(
        &config(&primary.url(), &fb, "fallbacks: [gpt-4o-mini], retry: { max_attempts: 3 }", "fallbacks: [claude-haiku], retry: { max_attempts: 3 }").build(),
    );
    let cases = [
        (OpenAi, "gpt-4o", false, json!({"error": {"message": "mock 400", "type": "server_error", "param": null, "code": null}})),
        (OpenAi, "gpt-4o", true, json!({"error": {"message": "mock 400", "type": "server_error", "param": null, "code": null}})),
        (Anthropic, "claude-sonnet", false, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "mock 400"}})),
    ];
    for (i, (c, model, stream, body)) in cases.into_iter().enumerate() {
        primary.script([Script::Status(400)]);
        let a = g.ask(c, model, stream).await;
        assert_eq!(a.status, 400, "{model} stream={stream}: {}", a.text);
        assert_eq!(a.json(), body, "the provider's error body comes back unchanged");
        assert_eq!(a.header("x-modelgate-attempts"), "1");
        assert_eq!(primary.model_calls(), i + 1, "a 400 is never retried (max_attempts 3)");
        assert_eq!(fb.model_calls(), 0, "a 400 never falls back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_model_is_retried_and_retry_after_is_honoured_or_skipped() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let conf = config(
        &primary.url(),
        &fb,
        "fallbacks: [gpt-4o-mini], retry: { max_attempts: 2, backoff_ms: 10, max_retry_after_ms: 100 }",
        "fallbacks: [claude-haiku]",
    )
    .model("gpt-4o-patient", "openai")
    .id("gpt-4o")
    .prices(2.5, 10.0)
    .fallbacks(["gpt-4o-mini"])
    .with("retry: { max_attempts: 2, backoff_ms: 10, max_retry_after_ms: 5000 }");
    let g = Gate::start(&conf.build());

    // 503 then Ok: the second try of the same model serves.
    for (n, stream) in [false, true].into_iter().enumerate() {
        primary.script([Script::Status(503), Script::Ok]);
        let a = g.ask(OpenAi, "gpt-4o", stream).await;
        assert_eq!((a.status, a.header("x-modelgate-model"), a.header("x-modelgate-attempts")), (200, "gpt-4o", "2"), "stream={stream}: {}", a.text);
        assert_eq!(a.answer(OpenAi, stream).as_deref(), Some(ANSWER));
        assert_eq!((primary.model_calls(), fb.model_calls()), (2 * (n + 1), 0));
    }

    // A Retry-After (1 s) over max_retry_after_ms (100 ms): on to the next model at once.
    primary.script([Script::StatusRetryAfter(429, 1)]);
    let a = g.ask(OpenAi, "gpt-4o", false).await;
    assert_eq!((a.status, a.header("x-modelgate-model"), a.header("x-modelgate-attempts")), (200, "gpt-4o-mini", "2"), "{}", a.text);
    assert!(a.elapsed < Duration::from_millis(700), "a Retry-After longer than max_retry_after_ms must not be waited: {:?}", a.elapsed);
    assert_eq!((primary.model_calls(), fb.model_calls()), (5, 1), "one try of gpt-4o, one of gpt-4o-mini");
    assert_eq!(g.metric("modelgate_fallbacks_total", &[("from", "gpt-4o"), ("to", "gpt-4o-mini"), ("reason", "429")]), 1.0);

    // Within max_retry_after_ms (5 s): waited, then the same model again.
    primary.script([Script::StatusRetryAfter(429, 1), Script::Ok]);
    let a = g.ask(OpenAi, "gpt-4o-patient", false).await;
    assert_eq!((a.status, a.header("x-modelgate-model"), a.header("x-modelgate-attempts")), (200, "gpt-4o-patient", "2"), "{}", a.text);
    assert!(a.elapsed >= Duration::from_millis(900), "Retry-After: 1 was not waited: {:?}", a.elapsed);
    assert_eq!((primary.model_calls(), fb.model_calls()), (7, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_attempt_fails_the_client_gets_the_last_status_in_its_dialect() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let g = Gate::start(&config(&primary.url(), &fb, "fallbacks: [claude-haiku]", "fallbacks: [gpt-4o-mini]").build());
    // Each try as `model: status` (or the status's outcome class).
    let tried = |msg: &str| msg.contains("tried:") && (msg.contains("gpt-4o: 503") || msg.contains("gpt-4o: 5xx")) && msg.contains("claude-haiku: 429");

    for stream in [false, true] {
        primary.script([Script::Status(503)]);
        fb.script([Script::Status(429)]);
        let a = g.ask(OpenAi, "gpt-4o", stream).await;
        assert_eq!(a.status, 429, "the last upstream status: {}", a.text);
        assert_eq!(a.header("x-modelgate-attempts"), "2");
        let e = a.json();
        assert!(e["error"]["type"].is_string(), "an OpenAI error body: {}", a.text);
        assert!(tried(e["error"]["message"].as_str().unwrap_or("")), "the message lists what was tried: {e}");
    }

    // An Anthropic client gets the Anthropic shape.
    primary.script([Script::Status(503)]);
    fb.script([Script::Status(429)]);
    let a = g.ask(Anthropic, "gpt-4o", false).await;
    assert_eq!((a.status, a.header("x-modelgate-attempts")), (429, "2"), "{}", a.text);
    let e = a.json();
    assert_eq!(e["type"], "error", "{e}");
    assert!(e["error"]["type"].is_string(), "{e}");
    assert!(tried(e["error"]["message"].as_str().unwrap_or("")), "{e}");
    assert_eq!((primary.model_calls(), fb.model_calls()), (3, 3));
    let log = g.mg.wait_access_log(3);
    assert!(log.iter().all(|r| r["status"] == 429 && r["attempts"] == 2), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_with_nothing_else_to_try_is_a_504() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let conf = config(&primary.url(), &fb, "", "").model("slow", "openai").id("gpt-4o").prices(1.0, 1.0).with("first_byte_timeout_ms: 200");
    let g = Gate::start(&conf.build());
    primary.script([Script::Delay(Duration::from_secs(2))]);
    let a = g.ask(OpenAi, "slow", false).await;
    assert_eq!(a.status, 504, "{}", a.text);
    assert!(a.elapsed < Duration::from_millis(1500), "the 2 s delay was waited: {:?}", a.elapsed);
    let msg = a.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("first_byte_timeout") && msg.contains("slow"), "the message names the timeout: {}", a.text);
    assert_eq!(g.metric("modelgate_attempts_total", &[("model", "slow"), ("outcome", "first_byte_timeout")]), 1.0);

    primary.script([Script::Delay(Duration::from_secs(2))]);
    let a = g.ask(Anthropic, "slow", true).await;
    assert_eq!(a.status, 504, "{}", a.text);
    assert_eq!(a.json()["type"], "error", "{}", a.text);
    assert_eq!(g.metric("modelgate_attempts_total", &[("model", "slow"), ("outcome", "first_byte_timeout")]), 2.0);
    assert_eq!(fb.model_calls(), 0);
    let log = g.mg.wait_access_log(2);
    assert!(log.iter().all(|r| r["status"] == 504 && r["error"].as_str().is_some_and(|e| e.contains("first_byte_timeout"))), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_its_first_event_ends_with_an_error_event() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let g = Gate::start(&config(&primary.url(), &fb, "fallbacks: [claude-haiku]", "fallbacks: [gpt-4o-mini]").build());

    // The connection cut after the first event, or the body ended cleanly
    // there (no [DONE] / message_stop): both are a cut. OpenAI clients get
    // the first chunk, then an error chunk, and no [DONE], also from an
    // Anthropic-kind model (translated); Anthropic clients get
    // message_start, then `event: error`, and no message_stop. Every case
    // runs; the failures are reported together.
    let mut problems = Vec::new();
    let cases = [
        (OpenAi, "gpt-4o", Script::Cut),
        (OpenAi, "gpt-4o", Script::Truncate),
        (OpenAi, "claude-sonnet", Script::Cut),
        (Anthropic, "claude-sonnet", Script::Cut),
        (Anthropic, "claude-sonnet", Script::Truncate),
    ];
    for (c, model, script) in cases {
        let what = format!("{c:?} client, {model}, {script:?}");
        primary.script([script]);
        let a = g.ask(c, model, true).await;
        let evs = events(&a.text);
        let first_ok = match c {
            OpenAi => evs.first().is_some_and(|e| e.1.contains("\"role\":\"assistant\"")),
            Anthropic => evs.first().is_some_and(|e| e.0 == "message_start"),
        };
        let (name, last) = evs.last().cloned().unwrap_or_default();
        let err: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
        let error_ok = match c {
            OpenAi => err["error"]["type"] == "server_error" && err["error"]["code"] == "cut" && err["error"]["message"].is_string(),
            Anthropic => name == "error" && err["type"] == "error" && err["error"]["type"] == "api_error" && err["error"]["message"].is_string(),
        };
        let complete = a.text.contains("[DONE]") || a.text.contains("message_stop");
        if a.status != 200 || evs.len() < 2 || !first_ok || !error_ok || complete {
            problems.push(format!(
                "{what}: want status 200, the first event, then an error event (OpenAI code \"cut\" / Anthropic api_error) and no final event; got {}:\n{}",
                a.status, a.text
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert_eq!((primary.model_calls(), fb.model_calls()), (5, 0), "a committed stream never falls back");
    eventually("modelgate_stream_errors_total{reason=cut} >= 5", || g.metric("modelgate_stream_errors_total", &[("reason", "cut")]) >= 5.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_primary_calls_failing_at_random_costs_no_request() {
    let _exclusive = LOAD.write().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let g = Gate::start(&config(&primary.url(), &fb, "fallbacks: [gpt-4o-mini]", "fallbacks: [claude-haiku]").raw("breaker: { failures: 0 }").build());
    primary.fail_randomly(0.5, 503);
    let n = 2000;
    let started = Instant::now();
    let g = &g;
    let ok = futures_util::stream::iter(0..n)
        .map(|i| async move {
            // OpenAI clients on gpt-4o, Anthropic clients on claude-sonnet; half streamed.
            let (c, model) = if i % 2 == 0 { (OpenAi, "gpt-4o") } else { (Anthropic, "claude-sonnet") };
            let stream = i % 4 >= 2;
            let a = g.ask(c, model, stream).await;
            a.status == 200 && a.answer(c, stream).as_deref() == Some(ANSWER)
        })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let rate = ok as f64 / n as f64;
    println!(
        "random 50% primary failures: {ok}/{n} requests succeeded ({:.2}%) in {:.1?}; primary calls {}, fallback calls {}",
        rate * 100.0,
        started.elapsed(),
        primary.model_calls(),
        fb.model_calls()
    );
    assert!(rate >= 0.999, "only {ok}/{n} requests succeeded");
    assert!(fb.model_calls() > n / 4, "the random failures did not happen: {} fallback calls", fb.model_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_skips_the_model_probes_after_cooldown_and_closes() {
    let _shared = LOAD.read().await;
    let (primary, fb) = (Mock::start().await, Mock::start().await);
    let conf = config(&primary.url(), &fb, "fallbacks: [claude-haiku], breaker: { failures: 3, cooldown_ms: 400 }", "")
        .model("solo", "openai")
        .id("gpt-4o-solo")
        .prices(1.0, 1.0)
        .with("breaker: { failures: 2, cooldown_ms: 30000 }")
        .route(r#"name: solo-route, match: { model: "solo*" }, target: solo"#);
    let g = Gate::start(&conf.build());
    let served_by = |a: &Answer| (a.status, a.header("x-modelgate-model").to_string());
    let fallback = (200, "claude-haiku".to_string());

    // Three failed attempts in a row open it.
    primary.script([Script::Status(503), Script::Status(503), Script::Status(503)]);
    for _ in 0..3 {
        assert_eq!(served_by(&g.ask(OpenAi, "gpt-4o", false).await), fallback);
    }
    assert_eq!(primary.model_calls(), 3);
    // Open: the 4th request never reaches the primary.
    let a = g.ask(OpenAi, "gpt-4o", false).await;
    assert_eq!(served_by(&a), fallback);
    assert_eq!(a.header("x-modelgate-attempts"), "1", "a skipped model is not an upstream attempt");
    assert_eq!(primary.model_calls(), 3, "an open breaker sent a request to the model");
    let h = g.model_health("gpt-4o");
    assert_eq!((h["provider"].as_str(), h["state"].as_str(), h["consecutive_failures"].as_u64()), (Some("openai"), Some("open"), Some(3)), "{h}");
    assert!(matches!(h["last_error"].as_str(), Some("503" | "5xx")), "{h}");
    assert!(h["retry_in_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 400), "{h}");
    assert_eq!(g.metric("modelgate_circuit_state", &[("model", "gpt-4o"), ("provider", "openai")]), 1.0);
    assert!(g.metric("modelgate_attempts_total", &[("model", "gpt-4o"), ("outcome", "circuit_open")]) >= 1.0);

    // After the cooldown one request probes it; a failed probe re-opens it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    primary.script([Script::Status(503)]);
    assert_eq!(served_by(&g.ask(OpenAi, "gpt-4o", false).await), fallback);
    assert_eq!(primary.model_calls(), 4, "the half-open probe reached the model");
    assert_eq!(served_by(&g.ask(OpenAi, "gpt-4o", false).await), fallback);
    assert_eq!(primary.model_calls(), 4, "a failed probe re-opens the breaker");
    assert_eq!(g.model_health("gpt-4o")["state"], "open");

    // A successful probe closes it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let a = g.ask(OpenAi, "gpt-4o", false).await;
    assert_eq!((served_by(&a), a.header("x-modelgate-attempts")), ((200, "gpt-4o".to_string()), "1"), "{}", a.text);
    assert_eq!(primary.model_calls(), 5);
    let h = g.model_health("gpt-4o");
    assert_eq!((h["state"].as_str(), h["consecutive_failures"].as_u64()), (Some("closed"), Some(0)), "{h}");
    assert_eq!(g.metric("modelgate_circuit_state", &[("model", "gpt-4o"), ("provider", "openai")]), 0.0);
    assert_eq!(served_by(&g.ask(OpenAi, "gpt-4o", true).await), (200, "gpt-4o".to_string()));

    // No fallback: once open, 503 circuit_open with Retry-After, and no call.
    primary.script([Script::Status(503), Script::Status(503)]);
    for _ in 0..2 {
        let a = g.ask(OpenAi, "solo", false).await;
        assert_eq!(a.status, 503);
        assert_ne!(a.json()["error"]["code"], "circuit_open", "the provider's own 503 while closed");
    }
    let calls = primary.model_calls();
    let a = g.ask(OpenAi, "solo", false).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "circuit_open", "{}", a.text);
    assert!(a.header("retry-after").parse::<u64>().is_ok_and(|s| (1..=30).contains(&s)), "Retry-After: {:?}", a.header("retry-after"));
    assert_eq!(primary.model_calls(), calls, "an open breaker sent a request to the model");
    // Its route has no servable model left: not ready.
    let (status, body) = http_get(&format!("{}/readyz", g.mg.admin)).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((status, v["ready"].as_bool()), (503, Some(false)), "{body}");
    assert_eq!(v["unservable_routes"], json!(["solo-route"]), "{body}");
    // Every listener accepts: the 503 is the route's, not a start-up one.
    assert_eq!(v["listening"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_skip_uninstalled_models_and_unreachable_providers() {
    let _shared = LOAD.read().await;
    let (local, fb) = (Mock::start().await, Mock::start().await);
    local.set_models(&["qwen2.5:7b"]);
    let conf = Config::new()
        .provider("openai", Kind::OpenAi, &fb)
        .provider("ollama", Kind::OpenAi, &local)
        .with("local: true, health_check: { path: /v1/models, interval_ms: 100 }")
        .model("llama", "ollama")
        .id("llama3.1:8b")
        .prices(0.0, 0.0)
        .fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6);
    let g = Gate::start(&conf.build());
    let installed = |g: &Gate, id: &str| g.provider_health("ollama")["installed"].as_array().is_some_and(|ids| ids.iter().any(|i| i == id));

    // llama3.1:8b is not listed: skipped, the fallback serves.
    eventually("/admin/health lists qwen2.5:7b as installed on ollama", || installed(&g, "qwen2.5:7b")).await;
    let p = g.provider_health("ollama");
    assert_eq!((p["healthy"].as_bool(), &p["error"]), (Some(true), &Value::Null), "{p}");
    assert!(!installed(&g, "llama3.1:8b"));
    assert!(local.requests().iter().any(|r| r.method == "GET" && r.path == "/v1/models"), "the health check polls the configured path");
    let a = g.ask(OpenAi, "llama", false).await;
    assert_eq!((a.status, a.header("x-modelgate-model")), (200, "gpt-4o-mini"), "{}", a.text);
    assert_eq!(a.answer(OpenAi, false).as_deref(), Some(ANSWER));
    assert_eq!(local.model_calls(), 0, "a model that is not installed got a call");
    assert_eq!(fb.model_calls(), 1);
    assert!(g.metric("modelgate_attempts_total", &[("model", "llama"), ("outcome", "not_installed")]) >= 1.0);

    // Pulled: the next checks list it, and it serves.
    local.set_models(&["llama3.1:8b", "qwen2.5:7b"]);
    eventually("/admin/health lists llama3.1:8b as installed", || installed(&g, "llama3.1:8b")).await;
    let a = g.ask(OpenAi, "llama", true).await;
    assert_eq!((a.status, a.header("x-modelgate-model")), (200, "llama"), "{}", a.text);
    assert_eq!(a.answer(OpenAi, true).as_deref(), Some(ANSWER));
    assert_eq!((local.model_calls(), local.last().json()["model"].as_str()), (1, Some("llama3.1:8b")));

    // A provider whose check cannot connect (added by a reload: the harness
    // waits for /readyz 200 at start) is unhealthy: its models are skipped,
    // and a route with only such a model makes /readyz 503.
    let dead = free_port();
    let text = std::fs::read_to_string(g.mg.config_path()).unwrap();
    let text = text.replacen(
        "providers:\n",
        &format!(
            "providers:\n  deadhost: {{ kind: openai, base_url: \"http://127.0.0.1:{dead}/v1\", health_check: {{ interval_ms: 100, timeout_ms: 500 }} }}\n"
        ),
        1,
    );
    let text = text.replacen("models:\n", "models:\n  dead-llama: { provider: deadhost, id: \"llama3.1:8b\", input_usd_per_mtok: 0, output_usd_per_mtok: 0 }\n", 1)
        + "routes:\n  - { name: only-dead, match: { model: dead-only }, target: dead-llama }\n  - { name: dead-fb, match: { model: dead-fb }, target: dead-llama, fallbacks: [gpt-4o-mini] }\n";
    std::fs::write(g.mg.config_path(), text).unwrap();
    let readyz = || http_get(&format!("{}/readyz", g.mg.admin)).unwrap_or_default();
    eventually("/readyz turns 503 once deadhost is found unhealthy", || readyz().0 == 503).await;
    let v: Value = serde_json::from_str(&readyz().1).unwrap_or(Value::Null);
    assert_eq!((v["ready"].as_bool(), &v["unservable_routes"]), (Some(false), &json!(["only-dead"])), "{v}");
    let p = g.provider_health("deadhost");
    assert_eq!(p["healthy"].as_bool(), Some(false), "{p}");
    assert!(p["error"].is_string(), "{p}");
    let a = g.ask(OpenAi, "dead-fb", false).await;
    assert_eq!((a.status, a.header("x-modelgate-model")), (200, "gpt-4o-mini"), "{}", a.text);
    assert!(g.metric("modelgate_attempts_total", &[("model", "dead-llama"), ("outcome", "unhealthy")]) >= 1.0);
    assert_eq!(local.model_calls(), 1);
}

/// The mock's failure scripts themselves, straight at the mock.
#[tokio::test]
async fn mock_failure_scripts_behave_as_documented() {
    let mock = Mock::start().await;
    let http = reqwest::Client::new();
    let chat = |stream: bool| json!({"model": "gpt-4o", "stream": stream, "messages": []});
    let post = |path: &str, body: Value| http.post(format!("{}{path}", mock.url())).json(&body).send();

    mock.script([Script::Reset]);
    assert!(post("/v1/chat/completions", chat(false)).await.is_err(), "Reset answers nothing");
    mock.script([Script::ErrorEvent, Script::ErrorEvent]);
    let r = post("/v1/messages", chat(true)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "text/event-stream"));
    assert!(r.text().await.unwrap().starts_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""));
    let t = post("/v1/chat/completions", chat(true)).await.unwrap().text().await.unwrap();
    assert_eq!(events(&t).len(), 1);
    assert!(t.starts_with("data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\""), "{t}");
    mock.script([Script::InvalidBody, Script::StatusRetryAfter(429, 7), Script::Status(529)]);
    assert_eq!(post("/v1/chat/completions", chat(false)).await.unwrap().text().await.unwrap(), "<html>upstream proxy error</html>");
    let r = post("/v1/chat/completions", chat(false)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "7"));
    let r = post("/v1/messages", chat(false)).await.unwrap();
    assert_eq!(r.status(), 529);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    // Header scripts, limited to one upstream model with `@`.
    let scripted = |h: &'static str, model: &'static str| {
        http.post(format!("{}/v1/chat/completions", mock.url())).header("x-mock-script", h).json(&json!({"model": model})).send()
    };
    assert_eq!(scripted("status:503@gpt-4o", "gpt-4o").await.unwrap().status(), 503);
    assert_eq!(scripted("status:503@gpt-4o", "gpt-4o-mini").await.unwrap().status(), 200);
    assert!(scripted("reset", "x").await.is_err());
    // Model listings and random failures.
    mock.set_models(&["llama3.1:8b"]);
    let models: Value = http.get(format!("{}/v1/models", mock.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "llama3.1:8b");
    mock.fail_randomly(0.5, 503);
    let mut failed = 0;
    for _ in 0..200 {
        failed += (post("/v1/chat/completions", chat(false)).await.unwrap().status() == 503) as u32;
    }
    assert!((70..=130).contains(&failed), "{failed}/200 failed");
    mock.fail_randomly(0.0, 503);
    assert_eq!(post("/v1/chat/completions", chat(false)).await.unwrap().status(), 200);
}
