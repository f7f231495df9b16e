//! OpenTelemetry traces through the release binary: a local OTLP/HTTP
//! receiver (POST /v1/traces, protobuf decoded with the
//! `opentelemetry-proto` types) collects what modelgate exports.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use common::{metric_sum, Config, Kind, Mock, Modelgate, Script};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

/// Text that appears only in prompts: no exported byte may contain it.
const SECRET: &str = "PROMPT-TEXT-d41d8cd98f";

#[derive(Default)]
struct Got {
    /// Each export request: its headers and raw body.
    posts: Vec<(HeaderMap, Bytes)>,
    /// Every span, with its resource's service.name.
    spans: Vec<(String, Span)>,
}

/// A local OTLP/HTTP receiver.
struct Receiver {
    url: String,
    got: Arc<Mutex<Got>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Got::default()));
        async fn traces(State(got): State<Arc<Mutex<Got>>>, headers: HeaderMap, body: Bytes) -> ([(&'static str, &'static str); 1], Vec<u8>) {
            let req = ExportTraceServiceRequest::decode(body.as_ref()).expect("an ExportTraceServiceRequest");
            let mut g = got.lock().unwrap();
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Any::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        g.spans.push((service.clone(), s));
                    }
                }
            }
            g.posts.push((headers, body));
            ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
        }
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    /// The spans of `trace` (hex), once `n` have arrived.
    async fn trace(&self, trace: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self.got.lock().unwrap().spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace).map(|(_, s)| s.clone()).collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn all_bytes(&self) -> Vec<u8> {
        self.got.lock().unwrap().posts.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn text<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v,
        other => panic!("{key}: {other:?} on span {}", s.name),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => *v,
        other => panic!("{key}: {other:?} on span {}", s.name),
    }
}

fn float(s: &Span, key: &str) -> f64 {
    match attr(s, key) {
        Some(Any::DoubleValue(v)) => *v,
        other => panic!("{key}: {other:?} on span {}", s.name),
    }
}

fn strings(s: &Span, key: &str) -> Vec<String> {
    match attr(s, key) {
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Any::StringValue(x)) => x.clone(),
                other => panic!("{key}: {other:?} in the array on span {}", s.name),
            })
            .collect(),
        other => panic!("{key}: {other:?} on span {}", s.name),
    }
}

fn telemetry(rx: &Receiver) -> String {
    format!(
        "telemetry:\n  otlp_endpoint: {}\n  service_name: gateway-under-test\n  sample_ratio: 1.0\n  batch_delay_ms: 20\n  headers:\n    Authorization: \"Bearer ${{OTLP_TEST_TOKEN}}\"\n",
        rx.url
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": format!("Say hi. {SECRET}")}]})
}

async fn post(mg: &Modelgate, body: &Value, traceparent: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("{}/v1/chat/completions", mg.gateway)).json(body);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.send().await.expect("request to modelgate")
}

fn trace_id_of(r: &reqwest::Response) -> String {
    let id = r.headers().get("x-modelgate-trace-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(id.len(), 32, "x-modelgate-trace-id: {id:?}");
    id
}

/// The upstream `traceparent` of a recorded call: (trace id, span id, flags).
fn upstream_traceparent(h: &axum::http::HeaderMap) -> (String, String, String) {
    let v = h.get("traceparent").expect("traceparent upstream").to_str().unwrap();
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn a_request_is_one_trace_with_its_attempt_span_genai_attributes_and_cost() {
    let rx = Receiver::start().await;
    let mock = Mock::start().await;
    let cfg = Config::openai_anthropic(&mock).model("gpt-4o-mini", "openai").prices(0.15, 0.6).raw(&telemetry(&rx)).build();
    let mg = Modelgate::start_with_env(&cfg, &[("OTLP_TEST_TOKEN", "tok-123")]);
    let r = post(&mg, &chat("gpt-4o-mini"), None).await;
    assert_eq!(r.status(), 200);
    let id = trace_id_of(&r);
    let spans = rx.trace(&id, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("a SERVER span");
    let try1 = spans.iter().find(|s| s.kind == SpanKind::Client as i32).expect("a CLIENT span");
    assert!(server.parent_span_id.is_empty(), "a new trace: the request span is its root");
    assert_eq!(try1.parent_span_id, server.span_id);
    assert_eq!(server.name, "chat gpt-4o-mini");
    for s in [server, try1] {
        assert_eq!(text(s, "gen_ai.operation.name"), "chat");
        assert_eq!(text(s, "gen_ai.provider.name"), "openai");
        assert_eq!(text(s, "gen_ai.request.model"), "gpt-4o-mini");
        assert_eq!(text(s, "gen_ai.response.model"), "gpt-4o-mini");
        // Semantic conventions: input tokens include cached ones.
        assert_eq!(int(s, "gen_ai.usage.input_tokens"), common::mock::PROMPT_TOKENS as i64);
        assert_eq!(int(s, "gen_ai.usage.cache_read.input_tokens"), common::mock::CACHED_TOKENS as i64);
        assert_eq!(int(s, "gen_ai.usage.output_tokens"), common::mock::COMPLETION_TOKENS as i64);
        assert!(attr(s, "error.type").is_none());
        assert_eq!(strings(s, "gen_ai.response.finish_reasons"), ["stop"]);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    }
    let log = mg.wait_access_log(1);
    let cost = float(server, "modelgate.cost_usd");
    assert!(cost > 0.0 && (cost - log[0]["cost_usd"].as_f64().unwrap()).abs() < 1e-12, "{cost} vs {}", log[0]);
    assert_eq!(float(try1, "modelgate.cost_usd"), cost);
    assert_eq!(int(server, "modelgate.attempts"), 1);
    assert_eq!(int(server, "http.response.status_code"), 200);
    assert_eq!(text(server, "modelgate.app"), "default");
    assert_eq!(text(try1, "server.address"), "127.0.0.1");
    assert!(server.start_time_unix_nano <= try1.start_time_unix_nano && try1.end_time_unix_nano <= server.end_time_unix_nano);
    // The provider got the attempt span as its parent.
    let (t, s, flags) = upstream_traceparent(&mock.last_call().headers);
    assert_eq!((t.as_str(), s, flags.as_str()), (id.as_str(), hex(&try1.span_id), "01"));
    // The access log line carries the trace id; the collector got the
    // configured service name and auth header (from ${OTLP_TEST_TOKEN}).
    assert_eq!(log[0]["trace_id"], id.as_str());
    let g = rx.got.lock().unwrap();
    assert!(g.spans.iter().all(|(service, _)| service == "gateway-under-test"));
    assert_eq!(g.posts[0].0.get("authorization").unwrap(), "Bearer tok-123");
    assert_eq!(g.posts[0].0.get("content-type").unwrap(), "application/x-protobuf");
    drop(g);
    assert!(!String::from_utf8_lossy(&rx.all_bytes()).contains(SECRET), "prompt text was exported");
    assert_eq!(metric_sum(&mg.metrics(), "modelgate_trace_spans_exported_total", &[]), 2.0);
}

#[tokio::test]
async fn a_streamed_answer_reports_the_providers_finish_reason() {
    let rx = Receiver::start().await;
    let mock = Mock::start().await;
    let cfg = Config::openai_anthropic(&mock).model("claude-haiku", "anthropic").id("claude-haiku-4-5-20251001").prices(1.0, 5.0).raw(&telemetry(&rx)).build();
    let mg = Modelgate::start_with_env(&cfg, &[("OTLP_TEST_TOKEN", "t")]);
    let body = json!({"model": "claude-haiku", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Say hi."}]});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", mg.gateway))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = trace_id_of(&r);
    assert!(r.text().await.unwrap().contains("message_stop"));
    let spans = rx.trace(&id, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for s in &spans {
        assert_eq!(strings(s, "gen_ai.response.finish_reasons"), ["end_turn"], "{}", s.name);
    }
}

#[tokio::test]
async fn a_cache_hit_is_a_trace_without_an_attempt_span_and_says_what_it_saved() {
    let rx = Receiver::start().await;
    let mock = Mock::start().await;
    let cfg = Config::openai_anthropic(&mock).model("gpt-4o-mini", "openai").prices(0.15, 0.6).raw("cache: { ttl_s: 600 }\n").raw(&telemetry(&rx)).build();
    let mg = Modelgate::start_with_env(&cfg, &[("OTLP_TEST_TOKEN", "t")]);
    // Temperature 0: a repeatable answer, which the cache keeps.
    let mut body = chat("gpt-4o-mini");
    body["temperature"] = json!(0);
    let miss = post(&mg, &body, None).await;
    assert_eq!(miss.headers()["x-modelgate-cache"], "miss");
    let miss_spans = rx.trace(&trace_id_of(&miss), 2).await;
    let hit = post(&mg, &body, None).await;
    assert_eq!(hit.headers()["x-modelgate-cache"], "hit");
    let hit_id = trace_id_of(&hit);
    let hit_spans = rx.trace(&hit_id, 1).await;
    let calls: Vec<(String, String)> = mock.requests().into_iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(calls.len(), 1, "the hit never went upstream: {calls:?}");

    let server = |spans: &[Span]| spans.iter().find(|s| s.kind == SpanKind::Server as i32).cloned().expect("a SERVER span");
    assert_eq!(miss_spans.len(), 2, "the miss: request span and its attempt");
    assert_eq!(text(&server(&miss_spans), "modelgate.cache"), "miss");
    assert!(attr(&server(&miss_spans), "modelgate.cache_saved_usd").is_none());
    // Give a stray attempt span time to arrive: there must be none.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hit_spans_now = rx.trace(&hit_id, 1).await;
    assert_eq!(hit_spans_now.len(), 1, "a hit has no upstream attempt: {hit_spans:#?}");
    let s = server(&hit_spans_now);
    assert_eq!(text(&s, "modelgate.cache"), "hit");
    let saved = float(&s, "modelgate.cache_saved_usd");
    let miss_cost = float(&server(&miss_spans), "modelgate.cost_usd");
    assert!((saved - miss_cost).abs() < 1e-12, "saved {saved} vs the miss's cost {miss_cost}");
}

#[tokio::test]
async fn a_client_traceparent_joins_its_trace_and_its_sampled_flag_decides() {
    let rx = Receiver::start().await;
    let mock = Mock::start().await;
    // sample_ratio 0: only the client's sampled flag records a trace.
    let cfg = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .raw(&telemetry(&rx).replace("sample_ratio: 1.0", "sample_ratio: 0.0"))
        .build();
    let mg = Modelgate::start_with_env(&cfg, &[("OTLP_TEST_TOKEN", "t")]);
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";

    // Not sampled by the client: nothing exported, the context still flows.
    let r = post(&mg, &chat("gpt-4o-mini"), Some("00-11111111111111111111111111111111-2222222222222222-00")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(trace_id_of(&r), "11111111111111111111111111111111");
    let (t, s, flags) = upstream_traceparent(&mock.last_call().headers);
    assert_eq!((t.as_str(), flags.as_str()), ("11111111111111111111111111111111", "00"));
    assert_ne!(s, "2222222222222222", "upstream gets modelgate's span, not the client's");

    // No traceparent and ratio 0: not sampled either.
    let r = post(&mg, &chat("gpt-4o-mini"), None).await;
    let unsampled = trace_id_of(&r);

    let r = post(&mg, &chat("gpt-4o-mini"), Some(&format!("00-{client_trace}-{client_span}-01"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(trace_id_of(&r), client_trace);
    let spans = rx.trace(client_trace, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    let try1 = spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap();
    assert_eq!(hex(&server.parent_span_id), client_span, "the request span's parent is the client's span");
    assert_eq!(try1.parent_span_id, server.span_id);
    let (t, s, flags) = upstream_traceparent(&mock.last_call().headers);
    assert_eq!((t.as_str(), s, flags.as_str()), (client_trace, hex(&try1.span_id), "01"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = rx.got.lock().unwrap();
    assert_eq!(g.spans.len(), 2, "only the sampled trace is exported: {:#?}", g.spans);
    assert!(g.spans.iter().all(|(_, s)| hex(&s.trace_id) != unsampled));
}

#[tokio::test]
async fn a_failing_then_fallback_request_shows_both_attempts() {
    let rx = Receiver::start().await;
    let primary = Mock::start().await;
    let fallback = Mock::start().await;
    let cfg = Config::new()
        .raw("retry: { max_attempts: 1 }")
        .raw(&telemetry(&rx))
        .provider("openai", Kind::OpenAi, &primary)
        .provider("openai-fb", Kind::OpenAi, &fallback)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai-fb")
        .prices(0.15, 0.6)
        .build();
    let mg = Modelgate::start_with_env(&cfg, &[("OTLP_TEST_TOKEN", "t")]);
    primary.script([Script::Status(503)]);
    let r = post(&mg, &chat("gpt-4o"), None).await;
    assert_eq!(r.status(), 200);
    let id = trace_id_of(&r);
    let spans = rx.trace(&id, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    let mut tries: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    tries.sort_by_key(|s| int(s, "modelgate.attempt"));
    assert!(tries.iter().all(|t| t.parent_span_id == server.span_id));
    let (first, second) = (tries[0], tries[1]);
    assert_eq!(text(first, "gen_ai.request.model"), "gpt-4o");
    assert_eq!(text(first, "modelgate.provider"), "openai");
    assert_eq!(int(first, "http.response.status_code"), 503);
    assert_eq!(text(first, "error.type"), "5xx");
    assert_eq!(first.status.as_ref().map(|s| s.code), Some(2), "the failed try's status is Error");
    assert!(attr(first, "gen_ai.usage.input_tokens").is_none());
    assert_eq!(text(second, "gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(text(second, "modelgate.provider"), "openai-fb");
    assert_eq!(text(second, "modelgate.fallback_reason"), "5xx");
    assert!(attr(second, "error.type").is_none());
    assert_eq!(int(second, "gen_ai.usage.output_tokens"), common::mock::COMPLETION_TOKENS as i64);
    assert!(first.end_time_unix_nano <= second.start_time_unix_nano);
    assert_eq!(int(server, "modelgate.attempts"), 2);
    assert_eq!(text(server, "modelgate.fallback_reason"), "5xx");
    assert_eq!(text(server, "gen_ai.request.model"), "gpt-4o");
    assert_eq!(text(server, "gen_ai.response.model"), "gpt-4o-mini");
    assert!(attr(server, "error.type").is_none());
    // Each provider saw its own try's span.
    assert_eq!(upstream_traceparent(&primary.last_call().headers).1, hex(&first.span_id));
    assert_eq!(upstream_traceparent(&fallback.last_call().headers).1, hex(&second.span_id));
    assert!(!String::from_utf8_lossy(&rx.all_bytes()).contains(SECRET), "prompt text was exported");
}

#[tokio::test]
async fn an_error_answer_is_traced_and_a_down_collector_drops_spans_without_slowing_requests() {
    let mock = Mock::start().await;
    // A closed port: every export fails.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let cfg = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .raw(&format!("telemetry:\n  otlp_endpoint: {closed}\n  batch_delay_ms: 20\n"))
        .build();
    let mg = Modelgate::start(&cfg);
    let started = Instant::now();
    for _ in 0..5 {
        let r = post(&mg, &chat("gpt-4o-mini"), None).await;
        assert_eq!(r.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "requests waited on the collector: {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = metric_sum(&mg.metrics(), "modelgate_trace_spans_dropped_total", &[("reason", "export_failed")]);
        if dropped >= 10.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped spans not counted: {dropped}\n{}", mg.metrics());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_telemetry_the_client_traceparent_passes_through_untouched() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&Config::openai_anthropic(&mock).model("gpt-4o-mini", "openai").prices(0.15, 0.6).build());
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = post(&mg, &chat("gpt-4o-mini"), Some(tp)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-modelgate-trace-id").is_none());
    assert_eq!(mock.last_call().headers.get("traceparent").unwrap(), tp);
    assert!(mg.wait_access_log(1)[0].get("trace_id").is_none());
}

#[test]
fn check_names_telemetry_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "providers:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" }\ntelemetry:\n  otlp_endpoint: localhost:4318\n  sample_ratio: 1.5\n  headers: { Host: x }\n  batch_delay_ms: 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{said}");
    for want in [
        "telemetry.otlp_endpoint",
        "http://localhost:4318",
        "telemetry.sample_ratio: must be between 0.0 and 1.0",
        "telemetry.headers.Host: is set by modelgate",
        "telemetry.batch_delay_ms: must be between 10 and 60000 ms, got 0",
    ] {
        assert!(said.contains(want), "missing {want:?} in:\n{said}");
    }
}

#[test]
fn check_shows_where_traces_go_and_never_a_header_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        "providers:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" }\ntelemetry:\n  otlp_endpoint: https://collector.example.com:4318/otlp/\n  sample_ratio: 0.25\n  headers: { Authorization: \"Bearer ${OTLP_CHECK_TOKEN}\" }\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(&path).env("OTLP_CHECK_TOKEN", "s3cr3t-token").output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("telemetry: traces over OTLP/HTTP to https://collector.example.com:4318/otlp/v1/traces as service modelgate, sample_ratio 0.25, headers: authorization"),
        "{said}"
    );
    assert!(!said.contains("s3cr3t-token"), "{said}");
}

#[tokio::test]
async fn sigterm_flushes_the_last_spans() {
    let rx = Receiver::start().await;
    let mock = Mock::start().await;
    // A batch would wait a minute: only the shutdown flush can send it.
    let cfg = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .raw(&format!("telemetry:\n  otlp_endpoint: {}\n  batch_delay_ms: 60000\n", rx.url))
        .build();
    let mut mg = Modelgate::start(&cfg);
    let r = post(&mg, &chat("gpt-4o-mini"), None).await;
    assert_eq!(r.status(), 200);
    let id = trace_id_of(&r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.trace(&id, 0).await.is_empty(), "exported before its batch delay");
    mg.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while mg.try_wait().is_none() {
        assert!(Instant::now() < deadline, "modelgate did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.trace(&id, 2).await.len(), 2, "the last spans were not flushed at shutdown");
}
