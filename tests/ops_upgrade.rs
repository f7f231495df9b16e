//! Zero-downtime binary upgrade through the release binary: `modelgate
//! upgrade` (systemd's ExecReload) starts `modelgate run --upgrade`, which
//! takes the listening sockets from the running process while clients
//! keep sending requests and 50 streams stay open on the old process. No
//! request fails, every stream ends with `[DONE]`, the old process exits
//! 0 once drained, and the ledger (written by both processes meanwhile)
//! holds every settled request, which the new process's budget counts
//! include once it has taken over state_dir.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, http_get, Config, Mock, Modelgate, Script};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 400, "messages": [{"role": "user", "content": "hi"}]})
}

/// The ledger's entries (both processes append to the same files).
fn ledger(mg: &Modelgate) -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir(mg.dir.path().join("state")) else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ledger-"))
        .flat_map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("a ledger line that is not an entry ({e}): {l}")))
        .collect()
}

async fn stream_all(gateway: String) -> (u16, String) {
    let r = reqwest::Client::new().post(format!("{gateway}/v1/chat/completions")).json(&chat(true)).send().await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return (0, e.to_string()),
    };
    let status = r.status().as_u16();
    let mut body = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => body.extend_from_slice(&c),
            Err(e) => return (status, format!("{}\n<cut: {e}>", String::from_utf8_lossy(&body))),
        }
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Kills the upgraded process at the end (it is not the harness's child).
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid `modelgate upgrade` reported.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_under_load_with_fifty_open_streams_fails_nothing_and_loses_no_ledger_entry() {
    // It takes ~10 s; it hung once in CI with no socket open (not
    // reproduced in many reruns), so every await below has a deadline that
    // names what it waited for, and the whole test has one too.
    tokio::time::timeout(Duration::from_secs(150), upgrade_under_load()).await.expect("the upgrade test did not finish in 150 s");
}

async fn upgrade_under_load() {
    let mock = Mock::start().await;
    let yaml = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .raw("shutdown_grace_s: 60\nbudgets:\n  - { name: all, window: day, limit_usd: 1000 }\n")
        .build();
    // A fake systemd notify socket, inherited by both processes.
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let notify_env = notify_path.display().to_string();
    let mut old = Modelgate::start_with_env(&yaml, &[("NOTIFY_SOCKET", notify_env.as_str())]);
    let old_pid = old.pid();
    let drain_notify = |sock: &std::os::unix::net::UnixDatagram| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !drain_notify(&notify).iter().any(|m| m.contains("READY=1")) {
        assert!(Instant::now() < deadline, "the old process did not announce READY=1");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 50 streams held open on the old process.
    mock.script((0..50).map(|_| Script::Gated));
    let streams: Vec<_> = (0..50).map(|_| tokio::spawn(stream_all(old.gateway.clone()))).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.model_calls() < 50 {
        assert!(Instant::now() < deadline, "only {} streams started", mock.model_calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Continuous load: 6 client loops, three with a new connection per
    // request, three keeping their connection alive (the old process
    // answers with `Connection: close` once the hand-over has begun, so
    // they move to a new connection before it closes idle ones).
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let loops: Vec<_> = (0..6)
        .map(|i| {
            let (stop, ok, failures, gw) = (stop.clone(), ok.clone(), failures.clone(), old.gateway.clone());
            tokio::spawn(async move {
                let pooled = if i % 2 == 0 { usize::MAX } else { 0 };
                let client = reqwest::Client::builder().pool_max_idle_per_host(pooled).timeout(Duration::from_secs(20)).build().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match client.post(format!("{gw}/v1/chat/completions")).json(&chat(false)).send().await {
                        Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                            Ok(v) if v["choices"].is_array() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.lock().unwrap().push(format!("body: {other:?}")),
                        },
                        Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(format!("error: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "no load went through before the upgrade: {:?}", failures.lock().unwrap());

    // The upgrade, as systemd's ExecReload runs it.
    let new_log = old.dir.path().join("new-stderr.log");
    let config = old.config_path().to_path_buf();
    let notify_env_helper = notify_env.clone();
    let upgrade = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args(["upgrade", "-c"])
            .arg(&config)
            .env("MODELGATE_LOG", "info")
            .env("NOTIFY_SOCKET", notify_env_helper)
            .stderr(std::fs::File::create(new_log).unwrap())
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), upgrade).await.expect("`modelgate upgrade` did not return in 60 s").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_log = old.dir.path().join("new-stderr.log");
    let new_stderr = || std::fs::read_to_string(&new_log).unwrap_or_default();
    assert!(out.status.success(), "modelgate upgrade failed: {stdout}\n{}\nold:\n{}", new_stderr(), old.stderr());
    let new_pid: u32 = stdout.split_whitespace().skip_while(|w| *w != "pid").nth(1).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{stdout}"));
    let _new = Pid(new_pid);
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid) && old.try_wait().is_none(), "both run while the old one drains");

    // The old process accepts for 5 s more, then only the new one does.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let during = ok.load(Ordering::Relaxed);
    assert!(old.try_wait().is_none(), "the old process waits for its 50 streams");

    // Release the streams: each ends cleanly on the old process.
    for _ in 0..50 {
        mock.release();
    }
    for (i, s) in streams.into_iter().enumerate() {
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(30), s).await.unwrap_or_else(|_| panic!("stream {i} did not end within 30 s of its release")).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("data: [DONE]"), "a stream did not complete across the upgrade: {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = old.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "the old process did not exit after draining:\n{}", old.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "old process: {status:?}\n{}", old.stderr());

    // Load keeps going against the new process alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(Duration::from_secs(30), l).await.expect("a load loop did not stop within 30 s (a request hung)").unwrap();
    }
    let total = ok.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\nnew:\n{}",
        failures.len(),
        total + failures.len(),
        &failures[..failures.len().min(10)],
        new_stderr()
    );
    assert!(during > before && total > during, "load went through before ({before}), during ({during}) and after ({total}) the hand-over");
    assert!(alive(new_pid), "the new process serves on:\n{}", new_stderr());

    // Every settled request is in the ledger: the load and the 50 streams.
    let entries = ledger(&old);
    assert_eq!(entries.len(), total + 50, "ledger entries vs. requests answered");

    // Once the old process is gone the new one takes state_dir over and
    // recounts: its budget counts every entry, the old process's too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !new_stderr().contains("took over state_dir") {
        assert!(Instant::now() < deadline, "the new process did not take over state_dir:\n{}", new_stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // systemd heard the new process claim the service (MAINPID= with
    // READY=1, and MAINPID= again after the take-over); nobody said
    // STOPPING=1, which would make systemd stop the whole service.
    let msgs = drain_notify(&notify);
    let claim = format!("MAINPID={new_pid}");
    assert!(msgs.iter().any(|m| m.lines().any(|l| l == claim) && m.lines().any(|l| l == "READY=1")), "{msgs:?}");
    assert!(msgs.iter().filter(|m| m.lines().any(|l| l == claim)).count() >= 2, "MAINPID= again after the take-over: {msgs:?}");
    assert!(!msgs.iter().any(|m| m.contains("STOPPING=1")), "the old process said STOPPING=1 during an upgrade: {msgs:?}");
    let lock = std::fs::read_to_string(old.dir.path().join("state/lock")).unwrap();
    assert_eq!(lock.lines().next(), Some(new_pid.to_string().as_str()), "the lock names the new process: {lock}");
    let (code, body) = http_get(&format!("{}/admin/budgets", old.admin)).expect("the new process answers on the admin port");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let row = v["budgets"].as_array().unwrap().iter().find(|b| b["name"] == "all").unwrap().clone();
    let ledger_usd: f64 = entries.iter().map(|e| e["cost_usd"].as_f64().unwrap()).sum();
    assert!((row["spent_usd"].as_f64().unwrap() - ledger_usd).abs() < 1e-6, "budget {row} vs ledger {ledger_usd}");
    assert_eq!(row["requests"].as_u64(), Some(entries.len() as u64), "{row}");
    assert_eq!(row["reserved_usd"].as_f64(), Some(0.0), "{row}");
}

/// A running build from before `--upgrade` (its lock file names only its
/// pid) would shut down on SIGQUIT: the new process refuses at once and
/// leaves it alone.
#[test]
fn upgrade_refuses_to_signal_a_build_that_cannot_hand_over() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let yaml = Config::new().provider("openai", common::Kind::OpenAi, "http://127.0.0.1:9").model("gpt-4o-mini", "openai").prices(0.15, 0.6).build();
    let (g, a) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let config = common::write_config(dir.path(), &g, &a, None, &yaml);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(dir.path().join("state/lock")).unwrap();
    std::io::Write::write_all(&mut &lock, format!("{}\n", std::process::id()).as_bytes()).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let started = Instant::now();
    let out = std::process::Command::new(bin()).args(["run", "--upgrade", "-c"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && started.elapsed() < Duration::from_secs(3), "{stderr}");
    assert!(stderr.contains("from before zero-downtime upgrades") && stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
