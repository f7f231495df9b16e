//! The web dashboard (issue 19): modelgate with budgets, an A/B split, a
//! tier route and a shadow route, history in the ledger and live traffic
//! against the mock; then headless Chromium (`tests/dashboard/drive.py`
//! over the DevTools protocol) checks every view against the JSON API,
//! that a new request shows up without a reload, that nothing overlaps,
//! and saves a screenshot of each view at 1280×800 (under the test's temp
//! dir, copied to `target/dashboard-screenshots/`). With a token, the page
//! asks for it and shows nothing without it. The JSON endpoints, feedback
//! and the ledger's arm are checked without a browser too.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{http_get, python, Config, Mock, Modelgate, Script};
use jiff::Timestamp;
use serde_json::{json, Value};

/// openai and anthropic on `mock`; gpt-4o, gpt-4o-mini and claude-haiku; an
/// A/B split `rollout` (app billing-bot: gpt-4o-mini `candidate` vs
/// claude-haiku `control`), a shadow route for app shadow-app, complexity
/// tiers for gpt-4o*; three budgets; then `extra`.
fn config(mock: &Mock, extra: &str) -> String {
    Config::openai_anthropic(mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .cached(1.25)
        .fallbacks(["gpt-4o-mini"])
        .with("max_output_tokens: 1000")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .cached(0.075)
        .with("max_output_tokens: 1000")
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .cached(0.1)
        .with("max_output_tokens: 1000")
        .route("name: rollout, match: { app: billing-bot }, split: [ { model: gpt-4o-mini, weight: 50, name: candidate }, { model: claude-haiku, weight: 50, name: control } ]")
        .route("name: observe, match: { app: shadow-app }, target: gpt-4o-mini, shadow: true")
        .tiers("by-complexity", "gpt-4o*", [(3, "gpt-4o-mini"), (10, "gpt-4o")])
        .raw(
            "budgets:\n\
             \x20 - { name: monthly-total, scope: global, window: month, limit_usd: 2, on_exceed: reject }\n\
             \x20 - { name: billing-bot, scope: { app: billing-bot }, window: day, limit_usd: 0.04, warn_at: 0.5, on_exceed: warn }\n\
             \x20 - { name: claude-daily, scope: { provider: anthropic }, window: day, limit_usd: 0.1, on_exceed: downgrade, downgrade_to: gpt-4o-mini }\n",
        )
        // The test client's one key serves both providers.
        .raw("cross_provider_client_keys: true\n")
        .raw(extra)
        .build()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_present() {
    let found =
        ["chromium", "chromium-browser", "google-chrome"].iter().any(|c| std::process::Command::new("which").arg(c).output().is_ok_and(|o| o.status.success()));
    assert!(found, "chromium is not installed: scripts/test installs Debian's chromium package (or: apt-get install chromium)");
}

/// One ledger line as modelgate writes it.
fn entry(at: Timestamp, app: &str, route: &str, provider: &str, model: &str, cost: f64, requested_cost: f64) -> Value {
    json!({"ts": at.to_string(), "app": app, "route": route, "provider": provider, "model": model, "requested": "gpt-4o",
           "input": 1000, "cached": 200, "cache_write": 0, "output": 300, "cost_usd": cost, "requested_cost_usd": requested_cost})
}

/// What modelgate would have written over the last 30 days: openai models
/// for the last 36 hours, all three before yesterday (so budgets of today
/// count live traffic only, except the global monthly one).
fn write_history(state: &Path) {
    let now = Timestamp::now().as_second();
    let mut lines: Vec<(Timestamp, Value)> = Vec::new();
    let at = |secs: i64| Timestamp::from_second(secs).unwrap();
    for h in 1..=36i64 {
        let t = at(now - h * 3600 + 120);
        for _ in 0..(1 + h % 4) {
            lines.push((t, entry(t, "history", "by-complexity", "openai", "gpt-4o-mini", 0.000345, 0.00575)));
        }
        if h % 3 == 0 {
            lines.push((t, entry(t, "history", "by-complexity", "openai", "gpt-4o", 0.00575, 0.00575)));
        }
    }
    for d in 2..=29i64 {
        let t = at(now - d * 86_400);
        for _ in 0..(3 + d % 5) {
            lines.push((t, entry(t, "history", "by-complexity", "openai", "gpt-4o-mini", 0.000345, 0.00575)));
        }
        for _ in 0..(d % 3) {
            lines.push((t, entry(t, "history", "by-complexity", "openai", "gpt-4o", 0.00575, 0.00575)));
        }
        if d % 2 == 0 {
            let mut e = entry(t, "history", "rollout", "anthropic", "claude-haiku", 0.00252, 0.00575);
            e["arm"] = json!("control");
            lines.push((t, e));
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    std::fs::create_dir_all(state).unwrap();
    for (t, line) in lines {
        let file = state.join(format!("ledger-{}.jsonl", t.strftime("%Y-%m")));
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        text.push_str(&line.to_string());
        text.push('\n');
        std::fs::write(&file, text).unwrap();
    }
}

struct Answer {
    status: u16,
    id: String,
    arm: Option<String>,
}

async fn chat(client: &reqwest::Client, mg: &Modelgate, app: &str, body: Value, script: Option<&str>) -> Answer {
    let mut req =
        client.post(format!("{}/v1/chat/completions", mg.gateway)).header("authorization", "Bearer sk-test").header("x-modelgate-app", app).json(&body);
    if let Some(s) = script {
        req = req.header("x-mock-script", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r.headers().get("x-modelgate-request-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let arm = r.headers().get("x-modelgate-arm").map(|v| v.to_str().unwrap().to_string());
    let _ = r.bytes().await;
    Answer { status, id, arm }
}

fn ask(content: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
}

async fn feedback(client: &reqwest::Client, mg: &Modelgate, body: Value) -> (u16, Value) {
    let r = client.post(format!("{}/admin/feedback", mg.admin)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn get(mg: &Modelgate, path: &str) -> Value {
    let (status, body) = http_get(&format!("{}{path}", mg.admin)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll an admin GET until `done` holds (records reach the dashboard right
/// after their response).
fn get_until(mg: &Modelgate, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get(mg, path);
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live traffic: split, tiers, shadow, a fallback, client errors, a
/// stream; then ratings for some split requests.
async fn traffic(mock: &Mock, mg: &Modelgate) {
    let client = reqwest::Client::new();
    let mut split = Vec::new();
    for i in 0..16u64 {
        mock.script([Script::Delay(Duration::from_millis(20 + (i * 37) % 140))]);
        let mut body = ask("draft the invoice reminder PROMPT-SECRET");
        body["user"] = json!(format!("user-{i}"));
        let a = chat(&client, mg, "billing-bot", body, None).await;
        assert_eq!(a.status, 200);
        split.push(a);
    }
    for i in 0..6u64 {
        mock.script([Script::Delay(Duration::from_millis(5 + i * 3))]);
        assert_eq!(chat(&client, mg, "tasks", ask("add task to call john"), None).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(chat(&client, mg, "tasks", ask("analyze my productivity patterns"), None).await.status, 200);
    }
    let fell_back = chat(&client, mg, "tasks", ask("analyze why the build broke"), Some("status:503@gpt-4o")).await;
    assert_eq!(fell_back.status, 200, "gpt-4o fails, gpt-4o-mini serves");
    for _ in 0..3 {
        assert_eq!(chat(&client, mg, "shadow-app", ask("show urgent tasks"), None).await.status, 200);
    }
    for _ in 0..2 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "list my tasks"}]});
        assert_eq!(chat(&client, mg, "errors-app", body, Some("status:400")).await.status, 400);
    }
    let stream = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "create a task"}]});
    assert_eq!(chat(&client, mg, "tasks", stream, None).await.status, 200);

    let arms: Vec<&str> = split.iter().filter_map(|a| a.arm.as_deref()).collect();
    assert!(arms.contains(&"candidate") && arms.contains(&"control"), "both arms get traffic: {arms:?}");
    let mut rated = 0;
    for a in &split {
        let rating = match (a.arm.as_deref(), rated % 3) {
            (Some("candidate"), 0 | 1) => json!({"request_id": a.id, "thumbs": "up"}),
            (Some("candidate"), _) => json!({"request_id": a.id, "score": 0.6}),
            (_, 0) => json!({"request_id": a.id, "thumbs": "down"}),
            _ => json!({"request_id": a.id, "score": 0.9}),
        };
        let (status, body) = feedback(&client, mg, rating).await;
        assert_eq!(status, 200, "{body}");
        rated += 1;
        if rated == 8 {
            break;
        }
    }
}

/// Run the browser driver; returns its summary line.
async fn drive(mg: &Modelgate, mode: &str, token: &str, shots: &Path) -> Value {
    chromium_present();
    let run = tokio::process::Command::new(python())
        .arg(root().join("tests/dashboard/drive.py"))
        .env("MG_ADMIN", &mg.admin)
        .env("MG_GATEWAY", &mg.gateway)
        .env("MG_OUT", shots)
        .env("MG_MODE", mode)
        .env("MG_TOKEN", token)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the browser test finished in 4 minutes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let kept = keep(shots, &format!("{mode}-failed"));
        panic!("the dashboard in Chromium ({mode}) failed; screenshots in {}:\n{stdout}\n{stderr}\nmodelgate's log:\n{}", kept.display(), mg.stderr());
    }
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| panic!("driver output: {stdout}"))
}

/// Keep the screenshots where they outlive the temp dir.
fn keep(shots: &Path, name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let dest = target.join("dashboard-screenshots").join(name);
    std::fs::create_dir_all(&dest).unwrap();
    // The driver may have failed before its first screenshot.
    for f in std::fs::read_dir(shots).into_iter().flatten().flatten() {
        std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
    }
    dest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_what_the_api_reports_and_updates_live() {
    let mock = Mock::start().await;
    let mut mg = Modelgate::start(&config(&mock, ""));
    // History on disk, read back at the restart (charts over time, arms).
    write_history(&mg.dir.path().join("state"));
    mg.restart();
    traffic(&mock, &mg).await;
    // Every record has reached the dashboard.
    get_until(&mg, "/admin/requests?limit=1", |v| v["seen"].as_u64() == Some(32));

    let shots = mg.dir.path().join("screenshots");
    let summary = drive(&mg, "full", "", &shots).await;
    let kept = keep(&shots, "views");
    eprintln!("dashboard screenshots (1280×800): {} (copies in {})", shots.display(), kept.display());
    for view in ["overview", "budgets", "models", "routes", "experiments", "requests", "requests-live"] {
        let png = std::fs::read(shots.join(format!("{view}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{view}.png is a PNG");
        // PNG IHDR: width and height at bytes 16..24.
        let (w, h) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!((w, h), (1280, 800), "{view}.png is 1280×800");
    }
    assert!(summary["checks"].as_u64().unwrap() > 40, "{summary}");

    // The prompt text never reached the requests' metadata.
    let recent = get(&mg, "/admin/requests?limit=1000");
    assert!(!recent.to_string().contains("PROMPT-SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_token_the_page_asks_for_it_and_shows_nothing_without_it() {
    let token = format!("tok-{:016x}", Timestamp::now().as_nanosecond() as u64);
    let mock = Mock::start().await;
    let mg = Modelgate::start_with_env(&config(&mock, "admin_token_env: MG_TEST_ADMIN_TOKEN\n"), &[("MG_TEST_ADMIN_TOKEN", &token)]);
    let client = reqwest::Client::new();
    assert_eq!(chat(&client, &mg, "tasks", ask("add task to call john"), None).await.status, 200);

    // The dashboard's endpoints need it (the others keep admin_read_requires_token's rule).
    let (status, body) = http_get(&format!("{}/admin/requests", mg.admin)).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("MG_TEST_ADMIN_TOKEN"), "{body}");
    let (status, _) = http_get(&format!("{}/", mg.admin)).unwrap();
    assert_eq!(status, 200, "the page itself holds no data");

    let shots = mg.dir.path().join("screenshots");
    drive(&mg, "token", &token, &shots).await;
    let kept = keep(&shots, "token");
    eprintln!("login screenshots: {} (copies in {})", shots.display(), kept.display());

    let log = std::fs::read_to_string(mg.dir.path().join("access.log")).unwrap_or_default();
    assert!(!log.is_empty());
    assert!(!log.contains(&token), "the token is not in the access log");
    assert!(!mg.stderr().contains(&token), "the token is not in modelgate's log");

    // admin_read_requires_token closes every read, but a browser can still
    // load the page (it holds no data) to be asked for the token.
    let strict = Modelgate::start_with_env(
        &config(&mock, "admin_token_env: MG_TEST_ADMIN_TOKEN\nadmin_read_requires_token: true\n"),
        &[("MG_TEST_ADMIN_TOKEN", &token)],
    );
    for (path, want) in [("/", 200), ("/dashboard", 200), ("/dashboard/app.js", 200), ("/admin/budgets", 401), ("/admin/requests", 401), ("/metrics", 401)] {
        assert_eq!(http_get(&format!("{}{path}", strict.admin)).unwrap().0, want, "{path}");
    }
    let r = client.post(format!("{}/admin/feedback", strict.admin)).json(&json!({"request_id": "00000000000000ff", "score": 1})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "feedback follows admin_read_requires_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_json_endpoints_feedback_and_the_ledger_arm() {
    let mock = Mock::start().await;
    let mut mg = Modelgate::start(&config(&mock, "dashboard: { recent_requests: 5, feedback_requests: 100 }\n"));
    let client = reqwest::Client::new();
    let mut split = Vec::new();
    for i in 0..8 {
        let mut body = ask("draft the invoice reminder");
        body["user"] = json!(format!("user-{i}"));
        let a = chat(&client, &mg, "billing-bot", body, None).await;
        assert_eq!(a.status, 200);
        split.push(a);
    }
    let plain = chat(&client, &mg, "tasks", ask("add task to call john"), None).await;

    // Request ids: 16 hex digits, unique, in the access log.
    for a in split.iter().chain([&plain]) {
        assert!(a.id.len() == 16 && a.id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", a.id);
    }
    let log = mg.wait_access_log(9);
    let logged: Vec<&str> = log.iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert!(split.iter().all(|a| logged.contains(&a.id.as_str())), "{logged:?}");
    let mut ids: Vec<&str> = split.iter().map(|a| a.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 8);

    // The ring keeps the last 5; filters; errors that say what to send.
    let recent = get_until(&mg, "/admin/requests", |v| v["seen"].as_u64() == Some(9));
    assert_eq!((recent["size"].as_u64(), recent["kept"].as_u64()), (Some(5), Some(5)), "{recent}");
    assert_eq!(recent["requests"][0]["request_id"], json!(plain.id), "newest first");
    assert_eq!(get(&mg, "/admin/requests?app=tasks")["requests"].as_array().unwrap().len(), 1);
    for (path, want) in [
        ("/admin/requests?status=abc", "use 2xx"),
        ("/admin/requests?colour=red", "unknown parameter `colour`"),
        ("/admin/series?step=week", "use ?step=hour"),
        ("/admin/traffic?window=year", "use ?window=day or ?window=month"),
        ("/admin/experiments?window=week", "use ?window=day or ?window=month"),
    ] {
        let (status, body) = http_get(&format!("{}{path}", mg.admin)).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    let series = get(&mg, "/admin/series?step=hour");
    assert_eq!(series["t"].as_array().unwrap().len(), 24);
    assert_eq!(series["total"]["requests"].as_array().unwrap().last(), Some(&json!(9)));
    let traffic = get(&mg, "/admin/traffic");
    assert_eq!(traffic["total"]["requests"], json!(9));
    let rollout = traffic["routes"].as_array().unwrap().iter().find(|r| r["route"] == "rollout").unwrap();
    assert_eq!(rollout["kind"], "split");
    assert_eq!(rollout["requests"], json!(8));

    // Feedback: errors first, then ratings that count per arm.
    let unknown = json!({"request_id": plain.id, "score": 0.5});
    for (body, status, want) in [
        (json!("nope"), 400, "send a JSON object"),
        (json!({"request_id": "xyz", "score": 0.5}), 400, "is not a modelgate request id"),
        (json!({"request_id": split[0].id, "score": 3}), 400, "send a number from 0 (bad) to 1 (good)"),
        (json!({"request_id": split[0].id}), 400, "send a rating"),
        (unknown, 404, "is not one of the split-routed requests"),
    ] {
        let (s, b) = feedback(&client, &mg, body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(want), "{body}: {b}");
    }
    let r = client.post(format!("{}/admin/feedback", mg.admin)).body("{not json").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("the body is not JSON"));
    let (s, b) = feedback(&client, &mg, json!({"request_id": split[0].id, "thumbs": "up"})).await;
    assert_eq!((s, b["arm"].as_str()), (200, split[0].arm.as_deref()), "{b}");
    let (s, b) = feedback(&client, &mg, json!({"request_id": split[0].id, "score": 0.25})).await;
    assert_eq!((s, &b["replaced"]), (200, &json!(true)), "a second rating replaces the first: {b}");
    let (s, _) = feedback(&client, &mg, json!({"request_id": split[1].id, "score": 1.0})).await;
    assert_eq!(s, 200);

    // The ledger records the arm and the request id; usage by arm.
    let ledger: Vec<Value> = std::fs::read_dir(mg.dir.path().join("state"))
        .unwrap()
        .filter_map(|f| f.ok())
        .filter(|f| f.file_name().to_string_lossy().starts_with("ledger-"))
        .flat_map(|f| std::fs::read_to_string(f.path()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>())
        .collect();
    for a in &split {
        let e = ledger.iter().find(|e| e["request_id"] == json!(a.id)).unwrap_or_else(|| panic!("no ledger entry for {}", a.id));
        assert_eq!(e["arm"].as_str(), a.arm.as_deref());
    }
    let usage = get(&mg, "/admin/usage?window=month");
    // `by_arm` is flat: "ROUTE/ARM".
    let rollout = |u: &Value| -> serde_json::Map<String, Value> {
        u["by_arm"].as_object().unwrap().iter().filter_map(|(k, c)| k.strip_prefix("rollout/").map(|arm| (arm.to_string(), c.clone()))).collect()
    };
    let by_arm = rollout(&usage);
    assert_eq!(by_arm.values().map(|c| c["requests"].as_u64().unwrap()).sum::<u64>(), 8);
    let before = get(&mg, "/admin/experiments");
    let exp = before["experiments"].as_array().unwrap().iter().find(|e| e["route"] == "rollout").unwrap().clone();
    for arm in exp["arms"].as_array().unwrap() {
        assert_eq!(arm["requests"], by_arm[arm["arm"].as_str().unwrap()]["requests"], "{arm}");
    }

    // After a restart: per-arm cost and ratings are read back, and a
    // request from before may still be rated.
    mg.restart();
    // (Errors and latency count from the start; cost and ratings are read back.)
    let lasting = |v: &Value| -> Vec<Value> {
        let e = v["experiments"].as_array().unwrap().iter().find(|e| e["route"] == "rollout").unwrap();
        e["arms"].as_array().unwrap().iter().map(|a| json!([a["arm"], a["requests"], a["cost_usd"], a["cost_per_request_usd"], a["feedback"]])).collect()
    };
    let after = get_until(&mg, "/admin/experiments", |v| lasting(v) == lasting(&before));
    assert_eq!(lasting(&after), lasting(&before), "arms survive a restart");
    assert_eq!(rollout(&get(&mg, "/admin/usage?window=month")), by_arm);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, b) = feedback(&client, &mg, json!({"request_id": split[2].id, "thumbs": "down"})).await;
        if s == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(s, 200, "a request from before the restart can be rated: {b}");
        break;
    }

    // The page and its files; no CDN: everything is served here.
    let r = client.get(format!("{}/dashboard", mg.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'") && csp.contains("form-action 'none'"), "{csp}");
    let (status, page) = http_get(&format!("{}/", mg.admin)).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>modelgate dashboard</title>") && page.contains("/dashboard/app.js"));
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    for asset in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
        let (status, body) = http_get(&format!("{}/dashboard/{asset}", mg.admin)).unwrap();
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 1000, "{asset}");
    }
    let (status, body) = http_get(&format!("{}/dashboard/nope.js", mg.admin)).unwrap();
    assert_eq!(status, 404, "{body}");
}
