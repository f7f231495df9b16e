//! Durable state against the release binary: one process per state_dir,
//! and a spend ledger that cannot be read completely is never a silent
//! reset of spend (`budget_store.on_ledger_error`: refuse by default,
//! reset, fail_closed).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, Config, Mock, Modelgate};
use serde_json::{json, Value};

/// One call as the mock reports it (1,200 input + 300 output tokens) at
/// $10/Mtok.
const COST: f64 = 0.015;

fn config(mock: &Mock, store: &str) -> String {
    Config::openai_anthropic(mock)
        .model("gpt-4o", "openai")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .model("claude-haiku", "anthropic")
        .prices(10.0, 10.0)
        .with("max_output_tokens: 400")
        .raw(&format!("budget_store: {{ kind: file, fsync_interval_ms: 0{store} }}"))
        .raw("budgets:\n  - { name: openai-day, scope: { provider: openai }, window: day, limit_usd: 10 }")
        .build()
}

fn bin() -> PathBuf {
    std::env::var_os("MODELGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_modelgate")))
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "count these words please ".repeat(325)}]})
}

async fn post(client: &reqwest::Client, mg: &Modelgate) -> (u16, Value) {
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&chat()).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn spent(mg: &Modelgate) -> f64 {
    let (status, body) = http_get(&format!("{}/admin/budgets", mg.admin)).expect("admin answers");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["budgets"][0]["spent_usd"].as_f64().unwrap()
}

fn state(mg: &Modelgate) -> PathBuf {
    mg.dir.path().join("state")
}

/// The month's ledger file (there is one: the tests run in one month).
fn ledger(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ledger-") && p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap_or_else(|| panic!("no ledger file in {}", dir.display()))
}

/// Start modelgate, serve `n` requests, wait until the fsync record has
/// them (it is written within a second; an older build never writes it),
/// then kill it (`kill -9`).
async fn with_ledger(mock: &Mock, store: &str, n: usize) -> Modelgate {
    let mg = Modelgate::start(&config(mock, store));
    let client = reqwest::Client::new();
    for _ in 0..n {
        let (status, body) = post(&client, &mg).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!((spent(&mg) - n as f64 * COST).abs() < 1e-9);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let meta = std::fs::read_to_string(state(&mg).join("ledger.meta")).unwrap_or_default();
        if meta.contains(&format!("\"entries\": {n}")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(&mg);
    mg
}

/// `kill -9` and wait until every thread is gone: the lock and the files
/// go with the last one (the main thread is a zombie before that).
fn stop(mg: &Modelgate) {
    mg.signal("KILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = format!("/proc/{}/status", mg.pid());
    let alive = |s: &str| {
        s.lines().any(|l| l.starts_with("Threads:") && l.split_whitespace().nth(1) != Some("1"))
            || s.lines().any(|l| l.starts_with("State:") && !l.contains('Z'))
    };
    while std::fs::read_to_string(&status).is_ok_and(|s| alive(&s)) {
        assert!(Instant::now() < deadline, "modelgate did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `modelgate run -c config` and expect it to exit on its own, non-zero,
/// within 15 s; returns its stderr.
fn expect_refusal(config: &Path) -> String {
    refusal(config).unwrap_or_else(|e| panic!("{e}"))
}

fn refusal(config: &Path) -> Result<String, String> {
    let mut child = Command::new(bin()).args(["run", "-c"]).arg(config).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return Err(format!("modelgate started instead of refusing:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if status.success() {
        return Err(format!("exit status {status}: {stderr}"));
    }
    Ok(stderr)
}

fn set_policy(mg: &Modelgate, policy: &str) {
    let text = std::fs::read_to_string(mg.config_path()).unwrap();
    let text = match text.find(", on_ledger_error:") {
        Some(i) => format!("{}, on_ledger_error: {policy} }}{}", &text[..i], &text[text[i..].find('}').unwrap() + i + 1..]),
        None => text.replace("fsync_interval_ms: 0 }", &format!("fsync_interval_ms: 0, on_ledger_error: {policy} }}")),
    };
    std::fs::write(mg.config_path(), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_state_dir_refuses_to_start() {
    let mock = Mock::start().await;
    let first = Modelgate::start(&config(&mock, ""));
    // The same config (so the same state_dir) on other ports.
    let text = std::fs::read_to_string(first.config_path()).unwrap();
    let g = first.gateway.rsplit(':').next().unwrap().to_string();
    let a = first.admin.rsplit(':').next().unwrap().to_string();
    let text = text
        .replace(&format!("127.0.0.1:{g}"), &format!("127.0.0.1:{}", free_port()))
        .replace(&format!("127.0.0.1:{a}"), &format!("127.0.0.1:{}", free_port()));
    let second = first.dir.path().join("second.yaml");
    std::fs::write(&second, text).unwrap();
    let stderr = expect_refusal(&second);
    let dir = state(&first).display().to_string();
    assert!(stderr.contains(&format!("state_dir {dir} is in use by another modelgate process (pid {})", first.pid())), "{stderr}");
    // The first one keeps serving.
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &first).await.0, 200);
}

/// Each way a ledger can be unreadable: (what to do to the file, what the
/// refusal must say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_ledger_is_refused_by_default_with_what_was_skipped() {
    let mock = Mock::start().await;
    type Damage = fn(&Path);
    let shapes: [(&str, Damage, &[&str]); 5] = [
        (
            "directory",
            |p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            &["cannot be read"],
        ),
        (
            "nul-filled",
            |p| {
                // The second of three lines becomes NUL bytes (a lost block).
                let mut b = std::fs::read(p).unwrap();
                let s = b.iter().position(|c| *c == b'\n').unwrap() + 1;
                let e = s + b[s..].iter().position(|c| *c == b'\n').unwrap();
                b[s..e].fill(0);
                std::fs::write(p, b).unwrap();
            },
            &["1 line(s) that are not ledger entries", "NUL bytes", "first at line 2", "2 entries are readable"],
        ),
        (
            "garbage",
            |p| {
                let b = std::fs::read_to_string(p).unwrap();
                let (first, rest) = b.split_once('\n').unwrap();
                std::fs::write(p, format!("{first}\nnot a ledger entry\n{{\"ts\": 12}}\n{rest}")).unwrap();
            },
            &["2 line(s) that are not ledger entries", "first at line 2", "3 entries are readable"],
        ),
        ("truncated", |p| std::fs::File::create(p).map(drop).unwrap(), &["0 bytes with 0 entries", "holding 3 entries were fsynced", "3 entries are missing"]),
        ("missing", |p| std::fs::remove_file(p).unwrap(), &["missing, but", "holding 3 entries were fsynced"]),
    ];
    // (Unreadable by permission is the same path as the directory, but the
    // suite runs as root, which reads any file.)
    let mut wrong = Vec::new();
    for (shape, damage, says) in shapes {
        let mg = with_ledger(&mock, "", 3).await;
        let file = ledger(&state(&mg));
        damage(&file);
        match refusal(mg.config_path()) {
            Ok(stderr) => {
                for want in [file.display().to_string().as_str(), "on_ledger_error", "repair the file(s) or move them"].iter().chain(says) {
                    if !stderr.contains(want) {
                        wrong.push(format!("{shape}: the refusal does not say `{want}`:\n{stderr}"));
                    }
                }
            }
            Err(e) => wrong.push(format!("{shape}: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_starts_from_the_readable_entries_and_says_what_it_skipped() {
    let mock = Mock::start().await;
    let mut mg = with_ledger(&mock, "", 3).await;
    let file = ledger(&state(&mg));
    let mut b = std::fs::read(&file).unwrap();
    let s = b.iter().position(|c| *c == b'\n').unwrap() + 1;
    let e = s + b[s..].iter().position(|c| *c == b'\n').unwrap();
    b[s..e].fill(0);
    std::fs::write(&file, b).unwrap();

    set_policy(&mg, "reset");
    mg.restart();
    // Two of the three entries are readable: that is what counts, and the
    // log says what was skipped.
    assert!((spent(&mg) - 2.0 * COST).abs() < 1e-9, "{}", spent(&mg));
    let log = mg.stderr();
    assert!(
        log.contains("on_ledger_error: reset starts from the readable entries only")
            && log.contains("1 line(s) that are not ledger entries")
            && log.contains("2 entries are readable"),
        "{log}"
    );
    let aside: Vec<_> =
        std::fs::read_dir(state(&mg)).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".damaged-")).collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside");

    // The ledger is whole again: it serves, counts on, and the default
    // policy starts on it after a restart.
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &mg).await.0, 200);
    set_policy(&mg, "refuse");
    mg.restart();
    assert!((spent(&mg) - 3.0 * COST).abs() < 1e-9, "{}", spent(&mg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_budgeted_requests_with_503_until_repaired() {
    let mock = Mock::start().await;
    let mut mg = with_ledger(&mock, "", 3).await;
    let file = ledger(&state(&mg));
    std::fs::File::create(&file).unwrap();

    set_policy(&mg, "fail_closed");
    mg.restart();
    let client = reqwest::Client::new();
    let calls = mock.calls();
    // OpenAI is budgeted: 503 in the OpenAI dialect, saying why and what to do.
    let (status, body) = post(&client, &mg).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "budget_ledger_damaged", "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("on_ledger_error is fail_closed") && msg.contains("3 entries are missing") && msg.contains("repairs or moves"), "{msg}");
    // Gemini's dialect too.
    let r = client
        .post(format!("{}/gemini/v1beta/models/gpt-4o:generateContent", mg.gateway))
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
    // No budget applies to Anthropic traffic here: it is served.
    let r = client
        .post(format!("{}/anthropic/v1/messages", mg.gateway))
        .json(&json!({"model": "claude-haiku", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(mock.calls(), calls + 1, "the refused requests never reached a provider");
    let (_, report) = http_get(&format!("{}/admin/budgets", mg.admin)).unwrap();
    assert!(report.contains("ledger_error"), "{report}");
    // The damage stays visible: a restart still finds it.
    mg.restart();
    assert_eq!(post(&client, &mg).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_ledger_loads_and_spend_survives_restarts() {
    let mock = Mock::start().await;
    let mut mg = with_ledger(&mock, "", 3).await;
    mg.restart();
    assert!((spent(&mg) - 3.0 * COST).abs() < 1e-9);
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &mg).await.0, 200);
    // kill -9 releases the state_dir lock: it starts again at once.
    mg.restart();
    assert!((spent(&mg) - 4.0 * COST).abs() < 1e-9);
    let log = mg.stderr();
    assert!(!log.contains("damaged") && !log.contains("cannot be read") && !log.contains("torn"), "{log}");

    // A power loss after the last fsync leaves a torn line (or zeros) at the
    // end: that is not damage. It is skipped with a warning and cut off.
    let file = ledger(&state(&mg));
    stop(&mg);
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, b"{\"ts\":\"2026-12-01T10:00:00Z\",\"app\":\"def\0\0\0\0\0\0\0\0").unwrap();
    mg.restart();
    assert!((spent(&mg) - 4.0 * COST).abs() < 1e-9);
    assert!(mg.stderr().contains("torn by a crash"), "{}", mg.stderr());
    assert_eq!(post(&client, &mg).await.0, 200);
    mg.restart();
    assert!((spent(&mg) - 5.0 * COST).abs() < 1e-9, "the next entry was not swallowed by the torn one");
}
