//! Model-scoped rate limits (`scope: {model}` or `per: model`) count every
//! model a request actually tries, fallbacks and escalations included, end
//! to end through the release binary against the mock provider: a model
//! over its limit is skipped to the next model of the plan; only when no
//! model could serve does the client get modelgate's 429 with
//! `Retry-After`; each model's count is charged its own answer's tokens
//! (a failed try gives them back); the same holds for a fleet sharing
//! Redis.

mod common;

use common::redis::Redis;
use common::{metric_sum, Config, Kind, Mock, Modelgate};
use serde_json::{json, Value};

/// Scripts gpt-a's calls to fail (the mock answers 500 for that model id
/// only), so every request falls back to gpt-b.
const FAIL_A: (&str, &str) = ("x-mock-script", "status:500@gpt-a");

/// gpt-a (falling back to gpt-b) and gpt-b on `openai` at `mock`; one try
/// per model and breakers off, so call counts are exact; `extra` is more
/// YAML (rate_limits:, budget_store:).
fn config(mock: &Mock, extra: &str) -> String {
    Config::new()
        .raw("retry: { max_attempts: 1, on_status: [429, 500, 502, 503] }\nbreaker: { failures: 0 }\n")
        .raw(extra)
        .provider("openai", Kind::OpenAi, mock)
        .model("gpt-a", "openai")
        .prices(1.0, 1.0)
        .fallbacks(["gpt-b"])
        .model("gpt-b", "openai")
        .prices(1.0, 1.0)
        .build()
}

/// ~1,570 input tokens and `max_tokens: 1000`: a worst case of ~2,570
/// tokens; the mock's answer uses 1,500 (1,200 in, 300 out).
fn chat() -> Value {
    json!({"model": "gpt-a", "max_tokens": 1000, "messages": [{"role": "user", "content": "count these words please ".repeat(325)}]})
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// A 429 from modelgate itself in the OpenAI shape, worth the SDK's
    /// backoff; its Retry-After (seconds).
    fn limited(&self) -> u64 {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(self.body["error"]["type"], "rate_limit_error", "{}", self.body);
        assert_eq!(self.body["error"]["code"], "rate_limit_exceeded", "{}", self.body);
        assert!(self.header("x-modelgate-model").is_empty(), "modelgate's own answer, not a provider's");
        assert_eq!(self.header("x-should-retry"), "true");
        let secs: u64 = self.header("retry-after").parse().unwrap_or_else(|_| panic!("Retry-After: {:?}", self.headers));
        assert!((1..=60).contains(&secs), "{secs}");
        secs
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

async fn post(gateway: &str, headers: &[(&str, &str)]) -> Answer {
    let mut r = reqwest::Client::new().post(format!("{gateway}/v1/chat/completions")).bearer_auth("sk-test").json(&chat());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer { status, headers, body: r.json().await.unwrap_or(Value::Null) }
}

/// The model calls the mock received for upstream model `id`.
fn calls(mock: &Mock, id: &str) -> usize {
    mock.requests().iter().filter(|r| r.method == "POST" && r.json()["model"] == id).count()
}

#[tokio::test]
async fn a_fallback_models_rpm_limit_counts_the_requests_it_serves() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&config(&mock, "rate_limits:\n  - { name: b, scope: { model: gpt-b }, rpm: 3 }\n"));
    let mut served = 0;
    for _ in 0..10 {
        let r = post(&mg.gateway, &[FAIL_A]).await;
        if r.status == 200 {
            served += 1;
            assert_eq!(r.header("x-modelgate-model"), "gpt-b");
            continue;
        }
        r.limited();
        let msg = r.message();
        assert!(msg.contains("rate limit `b` allows 3 requests per minute"), "{msg}");
        assert!(msg.contains("gpt-a: 500"), "the message lists what was tried: {msg}");
    }
    assert_eq!(served, 3, "gpt-b's limit counts the requests it serves as a fallback");
    assert_eq!(calls(&mock, "gpt-b"), 3);
    assert_eq!(calls(&mock, "gpt-a"), 10, "gpt-a has no limit: tried every time");

    let log = mg.wait_access_log(10);
    let limited: Vec<&Value> = log.iter().filter(|l| l["status"] == 429).collect();
    assert_eq!(limited.len(), 7);
    assert!(limited.iter().all(|l| l["rate_limited"] == "gpt-b" && l["error"] == "rate_limited"), "{limited:?}");
    assert!(log.iter().filter(|l| l["status"] == 200).all(|l| l.get("rate_limited").is_none()));
    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_rate_limited_total", &[("limit", "b"), ("kind", "requests")]), 7.0);
    assert_eq!(metric_sum(&m, "modelgate_attempts_total", &[("model", "gpt-b"), ("outcome", "rate_limited")]), 7.0);
    // A refusal by modelgate's own limit is not gpt-b's error.
    assert_eq!(metric_sum(&m, "modelgate_request_outcomes_total", &[("model", "gpt-b"), ("outcome", "rejected")]), 7.0);
    assert_eq!(metric_sum(&m, "modelgate_request_outcomes_total", &[("model", "gpt-b"), ("outcome", "error")]), 0.0);
}

#[tokio::test]
async fn per_model_limits_skip_a_model_over_its_limit_to_the_fallback() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&config(&mock, "rate_limits:\n  - { name: each, per: model, rpm: 2 }\n"));
    let mut served_by = Vec::new();
    for _ in 0..4 {
        let r = post(&mg.gateway, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        served_by.push(r.header("x-modelgate-model").to_string());
    }
    assert_eq!(served_by, ["gpt-a", "gpt-a", "gpt-b", "gpt-b"], "gpt-a over its limit is skipped to gpt-b");
    let r = post(&mg.gateway, &[]).await;
    r.limited();
    assert!(r.message().contains("rate limit `each` (per model `gpt-"), "{}", r.message());
    assert_eq!((calls(&mock, "gpt-a"), calls(&mock, "gpt-b")), (2, 2), "no call over a limit");

    // (Lines are written after the answers: not necessarily in order.)
    let log = mg.wait_access_log(5);
    let mut skipped: Vec<(String, String)> =
        log.iter().map(|l| (l["model"].as_str().unwrap_or("").to_string(), l["rate_limited"].as_str().unwrap_or("").to_string())).collect();
    skipped.sort();
    // (The 429's `model` is the last one considered.)
    let want = [("gpt-a", ""), ("gpt-a", ""), ("gpt-b", "gpt-a"), ("gpt-b", "gpt-a"), ("gpt-b", "gpt-a,gpt-b")];
    assert_eq!(skipped, want.map(|(m, s)| (m.to_string(), s.to_string())));
    let m = mg.metrics();
    assert_eq!(metric_sum(&m, "modelgate_fallbacks_total", &[("from", "gpt-a"), ("to", "gpt-b"), ("reason", "rate_limited")]), 3.0);
    assert_eq!(metric_sum(&m, "modelgate_attempts_total", &[("model", "gpt-a"), ("outcome", "rate_limited")]), 3.0);
}

#[tokio::test]
async fn each_models_token_limit_is_charged_its_own_answers_tokens() {
    let mock = Mock::start().await;
    // ta: one worst case (~2,570) fits, a worst case on top of one answer
    // (1,500) does not. tb: three answers settled at 1,500 fit with a
    // worst case on top of two of them, not of three (kept at the worst
    // case, only two would).
    let limits = "rate_limits:\n  - { name: ta, scope: { model: gpt-a }, tpm: 3000 }\n  - { name: tb, scope: { model: gpt-b }, tpm: 6000 }\n";
    let mg = Modelgate::start(&config(&mock, limits));
    let mut served = 0;
    for _ in 0..3 {
        let r = post(&mg.gateway, &[FAIL_A]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-modelgate-model"), "gpt-b");
        served += 1;
    }
    assert_eq!(served, 3);
    let r = post(&mg.gateway, &[FAIL_A]).await;
    r.limited();
    assert!(r.message().contains("rate limit `tb` allows 6000 tokens per minute"), "{}", r.message());
    assert_eq!(calls(&mock, "gpt-a"), 4, "gpt-a's failed tries gave their tokens back: admitted every time");
    assert_eq!(calls(&mock, "gpt-b"), 3);
    // gpt-a's count holds none of gpt-b's tokens: an answer of its own fits.
    let r = post(&mg.gateway, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), "gpt-a");
    // And now its own 1,500 are counted: no room for another worst case
    // on either model.
    let r = post(&mg.gateway, &[]).await;
    r.limited();
    let msg = r.message();
    assert!(msg.starts_with("no model could serve this request within its rate limits; retry in "), "{msg}");
    assert!(msg.contains("gpt-a: rate limit `ta` allows 3000 tokens per minute (this request may use up to "), "{msg}");
    assert!(msg.contains("gpt-b: rate limit `tb` allows 6000 tokens per minute"), "{msg}");
    assert_eq!((calls(&mock, "gpt-a"), calls(&mock, "gpt-b")), (5, 3));
}

#[tokio::test]
async fn an_escalation_counts_against_the_stronger_models_limit() {
    let mock = Mock::start().await;
    mock.answer("gpt-4o-mini", common::mock::Answer::Text(r#"{"city": 5}"#.into()));
    mock.answer("gpt-4o", common::mock::Answer::Text(r#"{"city": "Paris"}"#.into()));
    let yaml = Config::new()
        .raw("retry: { max_attempts: 1 }\nrate_limits:\n  - { name: big, scope: { model: gpt-4o }, rpm: 1 }\n")
        .provider("openai", Kind::OpenAi, &mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .route(r#"name: r, match: { model: "gpt-4o*" }, target: gpt-4o-mini, escalate_on: [schema_mismatch], escalate_to: [gpt-4o]"#)
        .build();
    let mg = Modelgate::start(&yaml);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add the city of the meeting"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}});
    let send = || async {
        let r = reqwest::Client::new().post(format!("{}/v1/chat/completions", mg.gateway)).bearer_auth("sk-test").json(&body).send().await.unwrap();
        let h = r.headers().clone();
        let get = |n: &str| h.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
        (r.status().as_u16(), get("x-modelgate-model"), get("x-modelgate-escalated"), get("x-modelgate-check-failed"))
    };
    let (status, model, escalated, failed) = send().await;
    assert_eq!((status, model.as_str(), escalated.as_str(), failed.as_str()), (200, "gpt-4o", "gpt-4o-mini→gpt-4o:schema_mismatch", ""));
    // gpt-4o's one request a minute went to the escalation: the next one
    // cannot escalate and delivers the failing answer, marked.
    let (status, model, escalated, failed) = send().await;
    assert_eq!((status, model.as_str(), escalated.as_str(), failed.as_str()), (200, "gpt-4o-mini", "", "schema_mismatch"));
    assert_eq!((calls(&mock, "gpt-4o-mini"), calls(&mock, "gpt-4o")), (2, 1));
    let log = mg.wait_access_log(2);
    let marked = log.iter().find(|l| l["check_failed"] == "schema_mismatch").expect("the marked answer's line");
    assert_eq!(marked["rate_limited"], "gpt-4o", "{marked}");
    assert!(log.iter().all(|l| l["check_failed"] == "schema_mismatch" || l.get("rate_limited").is_none()), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_sharing_redis_count_a_fallback_models_limit_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let mock = Mock::start().await;
    let extra = format!(
        "budget_store: {{ kind: redis, url: \"{}\", on_unavailable: fail_closed, timeout_ms: 1000 }}\nrate_limits:\n  - {{ name: b, scope: {{ model: gpt-b }}, rpm: 5 }}\n",
        redis.url()
    );
    let (a, b) = (Modelgate::start(&config(&mock, &extra)), Modelgate::start(&config(&mock, &extra)));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let gw = if i % 2 == 0 { a.gateway.clone() } else { b.gateway.clone() };
        tasks.push(tokio::spawn(async move { post(&gw, &[FAIL_A]).await }));
    }
    let mut served = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => served += 1,
            _ => {
                r.limited();
            }
        }
    }
    assert_eq!(served, 5, "one limit for the fleet, counted on the fallback");
    assert_eq!(calls(&mock, "gpt-b"), 5);
}
