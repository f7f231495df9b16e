//! Load benchmark: modelgate's overhead over calling the upstream directly.
//!
//! The same load (N requests at concurrency C) is sent first straight to the
//! in-process mock provider, then through a real `modelgate` process to that
//! same mock, for a JSON and a streaming (SSE) request. It prints latency
//! percentiles, the added latency and the throughput ratio; there is no
//! pass/fail threshold. Everything listens on 127.0.0.1.
//!
//! Then traces: a second modelgate with `telemetry:` on (sample_ratio 1.0,
//! exporting to a local OTLP receiver in this process) against the first,
//! off and on alternated three times per kind, with the throughput and latency
//! difference (MG_BENCH_TRACING=0 skips it).
//!
//! Run: `cargo bench --bench load`; knobs: MG_BENCH_REQUESTS (default 20000
//! per phase), MG_BENCH_CONCURRENCY (default 32), MG_BENCH_BUDGETS=1 (two
//! budgets that apply to every request: reserve, settle and a ledger append
//! on each). The mock, modelgate and this
//! driver share the machine's cores, so figures are relative, not absolute.
//!
//! `MG_BENCH_CACHE=1` benchmarks the response cache instead: the same
//! request over and over (100 % hits after the first) against the mock
//! called directly, JSON and streamed; then MG_BENCH_CACHE_ENTRIES
//! (default 100000) distinct requests into a cache of
//! MG_BENCH_CACHE_MAX_BYTES (default 64 MiB), reporting modelgate's RSS
//! before and after against the bound.

// The integration-test harness (mock provider + modelgate launcher); the
// bench uses only part of it.
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

const WARMUP: usize = 500;
const BODY_SIZE: usize = 1024;
/// Off/on pairs per kind in the tracing comparison.
const TRACE_ROUNDS: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

/// A chat request padded so the serialized body is ~1 KiB.
fn request_body(stream: bool) -> Bytes {
    request_body_n(stream, None)
}

/// The same with a temperature of 0 (cacheable) and, with `n`, a number
/// that makes it distinct.
fn request_body_n(stream: bool, n: Option<usize>) -> Bytes {
    let make = |content: String| {
        let mut v = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]});
        if let Some(n) = n {
            v["temperature"] = serde_json::json!(0);
            v["messages"][0]["content"] = serde_json::json!(format!("{n} {content}"));
        }
        if stream {
            v["stream"] = serde_json::json!(true);
        }
        v.to_string()
    };
    let pad = BODY_SIZE.saturating_sub(make(String::new()).len());
    Bytes::from(make("x".repeat(pad)))
}

/// One request, body read to the end. Non-200 answers, transport errors and
/// truncated streams are failures (a figure, not a panic).
async fn one(client: &reqwest::Client, url: &str, body: Bytes, stream: bool) -> Result<(), String> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status();
    let bytes = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(format!("status {status}: {text}"));
    }
    if stream && !bytes.ends_with(b"data: [DONE]\n\n") {
        return Err("stream ended without [DONE]".into());
    }
    Ok(())
}

struct Phase {
    latencies: Vec<Duration>,
    failures: Vec<String>,
    wall: Duration,
}

/// `n` requests from `concurrency` tasks pulling from a shared counter, so
/// the load stays closed-loop at exactly `concurrency` in flight.
async fn run(client: &reqwest::Client, url: &str, body: &Bytes, stream: bool, n: usize, concurrency: usize) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body, next) = (client.clone(), url.to_string(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n / concurrency + 1);
                let mut failures = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    match one(&client, &url, body.clone(), stream).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => failures.push(e),
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut phase = Phase { latencies: Vec::with_capacity(n), failures: Vec::new(), wall: Duration::ZERO };
    for w in workers {
        let (l, f) = w.await.expect("load worker panicked");
        phase.latencies.extend(l);
        phase.failures.extend(f);
    }
    phase.wall = start.elapsed();
    phase
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    rps: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(p: &mut Phase) -> Stats {
    p.latencies.sort_unstable();
    let l = &p.latencies;
    // Nearest-rank percentile over successful requests.
    let pct = |q: f64| l.get(((q * l.len() as f64).ceil() as usize).saturating_sub(1)).map_or(f64::NAN, |d| ms(*d));
    let mean = if l.is_empty() { f64::NAN } else { ms(l.iter().sum::<Duration>()) / l.len() as f64 };
    // Throughput counts every request sent, failed or not.
    let rps = (l.len() + p.failures.len()) as f64 / p.wall.as_secs_f64();
    Stats { p50: pct(0.50), p99: pct(0.99), mean, rps }
}

/// The same load against the upstream `direct`ly, then against `via`
/// (its base URL and label): a warm-up, then `n` requests, a row each.
#[allow(clippy::too_many_arguments)]
async fn direct_and(
    client: &reqwest::Client,
    direct: &str,
    via: (&str, &str),
    kind: &str,
    body: &Bytes,
    stream: bool,
    n: usize,
    concurrency: usize,
) -> (Stats, Stats) {
    let mut results = Vec::new();
    for (label, base) in [("direct", direct), (via.1, via.0)] {
        let url = format!("{base}/v1/chat/completions");
        // Warm-up: open pooled connections and fault in code paths.
        run(client, &url, body, stream, WARMUP, concurrency).await;
        let mut phase = run(client, &url, body, stream, n, concurrency).await;
        let s = stats(&mut phase);
        row(&format!("{kind} {label}"), &phase, &s);
        results.push(s);
    }
    let p = results.pop().expect("two phases");
    (results.pop().expect("two phases"), p)
}

fn row(name: &str, p: &Phase, s: &Stats) {
    println!("{name:<22}{:>8.3}{:>9.3}{:>10.3}{:>9.0}{:>7}", s.p50, s.p99, s.mean, s.rps, p.failures.len());
    if let Some(first) = p.failures.first() {
        println!("  first failure: {first}");
    }
}

#[tokio::main]
async fn main() {
    let n = env_usize("MG_BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("MG_BENCH_CONCURRENCY", 32);
    if std::env::var("MG_BENCH_CACHE").is_ok_and(|v| v == "1") {
        return cache_bench(n, concurrency).await;
    }

    let mock = common::Mock::start().await;
    let budgets = std::env::var("MG_BENCH_BUDGETS").is_ok_and(|v| v == "1");
    let mut conf = common::standard(&mock);
    if budgets {
        conf = conf.raw("budgets:\n  - { name: day, window: day, limit_usd: 1000000 }\n  - { name: openai-month, scope: { provider: openai }, window: month, limit_usd: 1000000 }\n");
    }
    let yaml = conf.build();
    let base_yaml = yaml.clone();
    // Modelgate::start polls readiness with blocking sleeps; keep it off the
    // runtime's worker threads (the mock is already serving on them).
    let mg = tokio::task::spawn_blocking(move || common::Modelgate::start(&yaml)).await.expect("start modelgate");

    // no_proxy: never route loopback traffic through an HTTP(S)_PROXY from
    // the environment. Default reqwest features here mean HTTP/1.1 only.
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).pool_max_idle_per_host(concurrency).build().expect("build HTTP client");

    // Make sure the proxied path really goes through modelgate's route.
    let probe = client
        .post(format!("{}/v1/chat/completions", mg.gateway))
        .header("content-type", "application/json")
        .body(request_body(false))
        .send()
        .await
        .expect("probe request through modelgate");
    let routed = probe.headers().get("x-modelgate-model").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(probe.status() == 200 && routed.as_deref() == Some("gpt-4o-mini"), "modelgate probe failed: {} {:?}\n{}", probe.status(), routed, mg.stderr());

    println!(
        "modelgate load benchmark: {n} requests/phase, concurrency {concurrency}, {} B body, budgets {}",
        request_body(false).len(),
        if budgets { "on" } else { "off" }
    );
    println!("{:<22}{:>8}{:>9}{:>10}{:>9}{:>7}", "phase", "p50 ms", "p99 ms", "mean ms", "req/s", "fail");
    for (kind, stream) in [("json", false), ("stream", true)] {
        let (d, p) = direct_and(&client, &mock.url(), (&mg.gateway, "via modelgate"), kind, &request_body(stream), stream, n, concurrency).await;
        println!("  added latency p50 {:+.3} ms, p99 {:+.3} ms; throughput ratio {:.2}", p.p50 - d.p50, p.p99 - d.p99, p.rps / d.rps);
    }
    let mut traced_calls = 0;
    if std::env::var("MG_BENCH_TRACING").map_or(true, |v| v != "0") {
        traced_calls = tracing_on_off(&client, &base_yaml, &mg, n, concurrency).await;
    }
    // modelgate's own account of the time spent inside it (access log).
    let mut own: Vec<f64> = mg.access_log().iter().filter_map(|r| r["overhead_ms"].as_f64()).collect();
    own.sort_by(f64::total_cmp);
    if !own.is_empty() {
        let q = |p: f64| own[((own.len() - 1) as f64 * p) as usize];
        println!("inside modelgate (access log overhead_ms): p50 {:.3} ms, p99 {:.3} ms over {} requests", q(0.5), q(0.99), own.len());
    }
    // Sanity: each proxied request should reach the mock exactly once.
    let expected = 1 + 2 * 2 * (WARMUP + n) + traced_calls;
    println!("mock saw {} upstream calls (expected {expected})", mock.calls());
}

/// modelgate's resident set size, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// `n` distinct cacheable requests (numbered from `from`) from
/// `concurrency` tasks.
async fn distinct(client: &reqwest::Client, url: &str, from: usize, n: usize, concurrency: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(from));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.to_string(), next.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= from + n {
                        return failed;
                    }
                    failed += one(&client, &url, request_body_n(false, Some(i)), false).await.is_err() as usize;
                }
            })
        })
        .collect();
    let mut failed = 0;
    for w in workers {
        failed += w.await.expect("load worker panicked");
    }
    failed
}

/// The response cache: 100 % hits against the mock called directly, then
/// memory after many distinct entries against `cache.max_bytes`.
async fn cache_bench(n: usize, concurrency: usize) {
    let entries = env_usize("MG_BENCH_CACHE_ENTRIES", 100_000);
    let max_bytes = env_usize("MG_BENCH_CACHE_MAX_BYTES", 64 * 1024 * 1024);
    let mock = common::Mock::start().await;
    let yaml = common::standard(&mock).raw(&format!("cache: {{ max_bytes: {max_bytes}, ttl_s: 3600 }}\n")).build();
    let mg = tokio::task::spawn_blocking(move || common::Modelgate::start(&yaml)).await.expect("start modelgate");
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).pool_max_idle_per_host(concurrency).build().expect("build HTTP client");
    println!("modelgate cache benchmark: {n} requests/phase, concurrency {concurrency}, {} B body", request_body_n(false, Some(0)).len());
    println!("{:<22}{:>8}{:>9}{:>10}{:>9}{:>7}", "phase", "p50 ms", "p99 ms", "mean ms", "req/s", "fail");
    for (kind, stream) in [("json", false), ("stream", true)] {
        let body = request_body_n(stream, Some(usize::MAX));
        let (d, p) = direct_and(&client, &mock.url(), (&mg.gateway, "cache hits"), kind, &body, stream, n, concurrency).await;
        println!("  p50 {:+.3} ms, p99 {:+.3} ms against direct; throughput ratio {:.2}", p.p50 - d.p50, p.p99 - d.p99, p.rps / d.rps);
    }
    let hits = common::metric_sum(&mg.metrics(), "modelgate_cache_requests_total", &[("result", "hit")]);
    println!("cache hits: {hits} (mock saw {} calls through modelgate: one per kind)", mock.calls() - 2 * (WARMUP + n));

    // Memory: many distinct entries against the byte bound.
    let url = format!("{}/v1/chat/completions", mg.gateway);
    distinct(&client, &url, 0, 2_000, concurrency).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(mg.pid());
    let started = Instant::now();
    let failed = distinct(&client, &url, 2_000, entries, concurrency).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = rss(mg.pid());
    let (_, stats) = common::http_get(&format!("{}/admin/cache", mg.admin)).unwrap_or_default();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
    let evicted = common::metric_sum(&mg.metrics(), "modelgate_cache_evictions_total", &[("cause", "size")]);
    println!(
        "{entries} distinct entries in {:.1} s ({failed} failed): cache holds {} entries, {:.1} MiB weighed of max_bytes {:.1} MiB; {evicted} evicted for size",
        took.as_secs_f64(),
        stats["entries"],
        mib(stats["bytes"].as_u64().unwrap_or(0)),
        mib(max_bytes as u64)
    );
    println!(
        "modelgate RSS: {:.1} MiB before, {:.1} MiB after: +{:.1} MiB for a {:.1} MiB cache ({:+.1} MiB over max_bytes)",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        mib(max_bytes as u64),
        mib(after.saturating_sub(before)) - mib(max_bytes as u64)
    );
}

/// A local OTLP/HTTP receiver: takes each export and counts its bytes. It
/// does not decode them (tests/telemetry.rs does): it shares the cores with
/// the load driver, the mock and modelgate, and decoding is a collector's
/// cost, not modelgate's. modelgate's own counters say how many spans went.
async fn otlp_receiver() -> (String, Arc<AtomicUsize>) {
    use prost::Message;
    let bytes = Arc::new(AtomicUsize::new(0));
    async fn traces(axum::extract::State(bytes): axum::extract::State<Arc<AtomicUsize>>, body: Bytes) -> Vec<u8> {
        bytes.fetch_add(body.len(), Ordering::Relaxed);
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::default().encode_to_vec()
    }
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(bytes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
    let url = format!("http://{}", listener.local_addr().expect("receiver address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("OTLP receiver") });
    (url, bytes)
}

/// The same load through `plain` (no telemetry) and a second modelgate
/// tracing every request, alternated (off, on, ×3) per kind. Returns
/// the upstream calls it made.
async fn tracing_on_off(client: &reqwest::Client, base_yaml: &str, plain: &common::Modelgate, n: usize, concurrency: usize) -> usize {
    let (receiver, received) = otlp_receiver().await;
    let yaml = format!("{base_yaml}\ntelemetry:\n  otlp_endpoint: {receiver}\n  sample_ratio: 1.0\n");
    let traced = tokio::task::spawn_blocking(move || common::Modelgate::start(&yaml)).await.expect("start traced modelgate");
    println!();
    println!("traces: the same modelgate config without and with telemetry (sample_ratio 1.0, OTLP receiver up)");
    println!("{:<22}{:>8}{:>9}{:>10}{:>9}{:>7}", "phase", "p50 ms", "p99 ms", "mean ms", "req/s", "fail");
    let mut calls = 0;
    for (kind, stream) in [("json", false), ("stream", true)] {
        let body = request_body(stream);
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..TRACE_ROUNDS {
            for (label, mg) in [("tracing off", plain), ("tracing on", &traced)] {
                let url = format!("{}/v1/chat/completions", mg.gateway);
                if round == 0 {
                    run(client, &url, &body, stream, WARMUP, concurrency).await;
                    calls += WARMUP;
                }
                let mut phase = run(client, &url, &body, stream, n, concurrency).await;
                calls += n;
                let s = stats(&mut phase);
                row(&format!("{kind} {label}"), &phase, &s);
                if label == "tracing off" {
                    off.push(s)
                } else {
                    on.push(s)
                }
            }
        }
        let avg = |v: &[Stats], f: fn(&Stats) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
        let (rps_off, rps_on) = (avg(&off, |s| s.rps), avg(&on, |s| s.rps));
        println!(
            "  {kind}: throughput {:+.1} % with tracing (avg of {TRACE_ROUNDS} rounds: {rps_off:.0} → {rps_on:.0} req/s); p50 {:+.3} ms, p99 {:+.3} ms",
            (rps_on / rps_off - 1.0) * 100.0,
            avg(&on, |s| s.p50) - avg(&off, |s| s.p50),
            avg(&on, |s| s.p99) - avg(&off, |s| s.p99)
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = traced.metrics();
    let dropped = common::metric_sum(&m, "modelgate_trace_spans_dropped_total", &[]).abs();
    let exported = common::metric_sum(&m, "modelgate_trace_spans_exported_total", &[]);
    println!("  the OTLP receiver took {} KiB; modelgate counted {exported} spans exported, {dropped} dropped", received.load(Ordering::Relaxed) / 1024);
    calls
}
