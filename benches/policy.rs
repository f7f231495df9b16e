//! The cost of routing one request, against the cost of parsing its body
//! (the baseline every request pays anyway), in the same run.
//!
//! Run: `cargo bench --bench policy` (MG_BENCH_ITERS, default 200000).
//! Prints ns per request for: body parse (baseline), classify, classify +
//! decide on a tiers route, and on a select route, the budget step (worst
//! case with a real token count, reserve, settle with a ledger append to a
//! temp dir), and the ratio of each to the baseline.

// The integration-test harness, for its config builder.
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use common::{Config, Kind};
use modelgate::body::JsonBody;
use modelgate::budget::{charged, worst_case, Budgets, Charge, Entry, RequestEstimate, Verdict};
use modelgate::dialect::classify_path;
use modelgate::policy::{classify, decide, Overrides};

/// Four models on a cloud and a local provider (never called), a route of
/// each kind, two budgets.
fn conf() -> String {
    Config::new()
        .provider("openai", Kind::OpenAi, "http://127.0.0.1:1")
        .provider("ollama", Kind::OpenAi, "http://127.0.0.1:3").with("local: true")
        .model("gpt-4o", "openai").prices(2.5, 10.0).with("context_tokens: 128000, quality: 4").fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai").prices(0.15, 0.6).with("context_tokens: 128000, quality: 2")
        .model("mid", "openai").prices(0.8, 4.0).with("context_tokens: 200000, quality: 3")
        .model("llama", "ollama").prices(0.0, 0.0).with("context_tokens: 8192, quality: 1")
        .route("name: planning, match: { task: planning }, target: gpt-4o")
        .route(r#"name: billing, match: { app: "billing-*" }, target: gpt-4o-mini"#)
        .route("name: extraction, match: { task: extraction }, select: { candidates: [gpt-4o, gpt-4o-mini, mid, llama] }")
        .tiers("by-complexity", "gpt-4o*", [(3, "gpt-4o-mini"), (7, "mid"), (10, "gpt-4o")])
        .raw("budgets:\n  - { name: day, window: day, limit_usd: 1000000 }\n  - { name: openai-month, scope: { provider: openai }, window: month, limit_usd: 1000000 }")
        .build()
}

fn body() -> Bytes {
    let mut msgs = vec![serde_json::json!({"role": "system", "content": "You are a helpful task assistant. Answer briefly."})];
    for i in 0..6 {
        msgs.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "Sure, here is what I found in your task list for this week."}));
    }
    msgs.push(serde_json::json!({"role": "user", "content": "show urgent Avenue tasks due this week, sorted by due date please"}));
    Bytes::from(serde_json::json!({"model": "gpt-4o", "temperature": 0.2, "messages": msgs}).to_string())
}

fn time(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let iters: u32 = std::env::var("MG_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let state = std::env::temp_dir().join(format!("modelgate-bench-{}", std::process::id()));
    let snap = modelgate::config::load_str(&format!("state_dir: {}\n{}", state.display(), conf()), &|_| None).expect("bench config");
    let overrides = Overrides::new();
    let raw = body();
    let path = "/v1/chat/completions";
    let inc = classify_path(path, None).expect("path");
    let headers = http::HeaderMap::new();
    let mut task_headers = http::HeaderMap::new();
    task_headers.insert("x-modelgate-task", http::HeaderValue::from_static("extraction"));

    let parse = time(iters, || {
        black_box(JsonBody::parse(black_box(raw.clone())).ok());
    });
    let parsed = JsonBody::parse(raw.clone()).expect("body");
    let model = parsed.model().ok().flatten();
    let classify_only = time(iters, || {
        black_box(classify(&snap, &inc, path, &headers, Some(&parsed), raw.len(), model.as_deref()).ok());
    });
    let tiers = time(iters, || {
        let f = classify(&snap, &inc, path, &headers, Some(&parsed), raw.len(), model.as_deref()).expect("classify");
        black_box(decide(&snap, &overrides, &f, None).ok().map(|d| d.attempts.len()));
    });
    let select = time(iters, || {
        let f = classify(&snap, &inc, path, &task_headers, Some(&parsed), raw.len(), model.as_deref()).expect("classify");
        black_box(decide(&snap, &overrides, &f, None).ok().map(|d| d.attempts.len()));
    });
    let budgets = Budgets::open(&snap).expect("budgets");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let gpt4o = snap.models.get("gpt-4o");
    // One request's budget step as the gateway runs it: worst case,
    // reserve, settle with a ledger append.
    let budget_step = |exact: bool| {
        let f = classify(&snap, &inc, path, &headers, Some(&parsed), raw.len(), model.as_deref()).expect("classify");
        let c = Charge { provider: "openai", model: Some("gpt-4o"), app: &f.app, task: None, key: None, user: None };
        // `exact`: the tokenizer's count, as admission takes it when the
        // byte bound does not fit.
        let counted = exact.then(|| worst_case(&f, gpt4o, true));
        let bound = RequestEstimate { facts: &f, model: gpt4o };
        rt.block_on(async {
            let v = match &counted {
                Some(w) => budgets.admit(&c, w, false).await,
                None => budgets.admit(&c, &bound, false).await,
            };
            if let Verdict::Go(h) = v {
                let e = Entry {
                    ts: h.admitted_at(),
                    app: f.app.clone(),
                    route: "by-complexity".into(),
                    provider: "openai".into(),
                    model: "gpt-4o".into(),
                    input: 120,
                    output: 30,
                    cost_usd: 0.0006,
                    requested_cost_usd: 0.0006,
                    ..Default::default()
                };
                budgets.settle(h, charged(&e), &e).await;
            }
        });
    };
    let budget = time(iters, || budget_step(false));
    let counted = time(iters / 10, || budget_step(true));
    let _ = std::fs::remove_dir_all(&state);
    println!("policy benchmark: {iters} iterations, {} B body (8 messages)", raw.len());
    println!("{:<44}{:>10}{:>8}", "step", "ns/req", "ratio");
    for (name, ns) in [
        ("body parse (baseline)", parse),
        ("classify", classify_only),
        ("classify + decide (tiers)", tiers),
        ("classify + decide (select, 4)", select),
        ("classify + budget (bound, reserve, settle)", budget),
        ("  … with a token count (near a limit)", counted),
    ] {
        println!("{name:<44}{ns:>10.0}{:>8.2}", ns / parse);
    }
}
