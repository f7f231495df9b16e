//! Exposure checks through the release binary: `check` and `run` refuse an
//! admin listener reachable from other machines without a token, `check`
//! warns about a reachable gateway that injects provider keys, and
//! `admin_read_requires_token` closes the read-only admin endpoints.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Mock, Modelgate};

/// The binary under test (MODELGATE_BIN runs another build, as the harness does).
fn bin() -> PathBuf {
    std::env::var_os("MODELGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_modelgate")))
}

/// `modelgate <cmd> -c <yaml>`: (exit ok, exit code, stdout + stderr).
fn run_cmd(cmd: &str, yaml: &str) -> (bool, Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, format!("state_dir: {}\n{yaml}", dir.path().join("state").display())).unwrap();
    let (stdout, stderr) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(bin())
        .args([cmd, "-c"])
        .arg(&path)
        .env("MODELGATE_LOG", "warn")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // `run` that accepts the file would serve forever: stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&stdout).unwrap_or_default() + &std::fs::read_to_string(&stderr).unwrap_or_default();
    let text = if status.is_none() { format!("(still running after 10 s, killed)\n{text}") } else { text };
    (status.is_some_and(|s| s.success()), status.and_then(|s| s.code()), text)
}

const PROVIDER: &str = "providers:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" }\n";
const INJECTING: &str = "providers:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\", api_key_env: MG_TEST_UNSET_KEY }\n";

#[test]
fn an_exposed_admin_listener_without_a_token_is_refused_by_check_and_run() {
    for admin in ["0.0.0.0", "[::]", "192.0.2.10"] {
        let yaml = format!("listen:\n  gateway: 127.0.0.1:{}\n  admin: \"{admin}:{}\"\n{PROVIDER}", common::free_port(), common::free_port());
        let (ok, code, text) = run_cmd("check", &yaml);
        assert!(!ok && code == Some(1), "{admin}: {text}");
        assert!(text.contains("listen.admin") && text.contains("admin_token_env") && text.contains("listen on 127.0.0.1:"), "{admin}: {text}");
        // `run` refuses the same file before listening (it would bind
        // 0.0.0.0 otherwise; 192.0.2.10 is not an address of this host, so
        // binding it fails too: the message is what tells them apart).
        let (ok, _, text) = run_cmd("run", &yaml);
        assert!(!ok && text.contains("listen.admin") && text.contains("admin_token_env"), "{admin}: {text}");
    }
    // With a token it is valid; check still warns that reads are open.
    let yaml = format!("listen:\n  admin: 0.0.0.0:{}\nadmin_token_env: MG_TEST_ADMIN_TOKEN\n{PROVIDER}", common::free_port());
    let (ok, _, text) = run_cmd("check", &yaml);
    assert!(ok, "{text}");
    assert!(text.contains("warning: listen.admin") && text.contains("admin_read_requires_token: true"), "{text}");
    // A loopback admin needs nothing.
    let (ok, _, text) = run_cmd("check", &format!("listen:\n  admin: 127.0.0.1:{}\n{PROVIDER}", common::free_port()));
    assert!(ok && !text.contains("warning"), "{text}");
    // The read flag needs a token to check against.
    let (ok, _, text) = run_cmd("check", &format!("admin_read_requires_token: true\n{PROVIDER}"));
    assert!(!ok && text.contains("admin_read_requires_token") && text.contains("admin_token_env"), "{text}");
}

#[test]
fn check_warns_about_an_exposed_gateway_that_injects_keys() {
    let yaml = format!("listen:\n  gateway: 0.0.0.0:{}\n{INJECTING}", common::free_port());
    let (ok, _, text) = run_cmd("check", &yaml);
    assert!(ok, "a warning, not an error: {text}");
    assert!(
        text.contains("warning: listen.gateway") && text.contains("anyone who can reach this port spends your keys") && text.contains("127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("openai"), "names the injecting providers: {text}");
    // A gateway that forwards the clients' own keys spends nothing of ours.
    let (ok, _, text) = run_cmd("check", &format!("listen:\n  gateway: 0.0.0.0:{}\n{PROVIDER}", common::free_port()));
    assert!(ok && !text.contains("warning"), "{text}");
    // Nor does a loopback one.
    let (ok, _, text) = run_cmd("check", &format!("listen:\n  gateway: 127.0.0.1:{}\n{INJECTING}", common::free_port()));
    assert!(ok && !text.contains("warning"), "{text}");
}

/// `METHOD url` with an optional Authorization value: (status, body).
fn request(method: &str, url: &str, auth: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_read_requires_token_closes_reads_and_bearer_is_case_insensitive() {
    let mock = Mock::start().await;
    let yaml = common::standard(&mock).raw("admin_token_env: MG_TEST_ADMIN_TOKEN\nadmin_read_requires_token: true").build();
    let mg = Modelgate::start_with_env(&yaml, &[("MG_TEST_ADMIN_TOKEN", "t0ken")]);
    let a = &mg.admin;
    for path in ["/metrics", "/admin/budgets", "/admin/usage", "/admin/health", "/admin/overrides"] {
        let (status, body) = request("GET", &format!("{a}{path}"), None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body.contains("Bearer"), "{body}");
        assert_eq!(request("GET", &format!("{a}{path}"), Some("Bearer wrong")).0, 401, "{path}");
        for scheme in ["bearer", "Bearer", "BEARER"] {
            let (status, body) = request("GET", &format!("{a}{path}"), Some(&format!("{scheme} t0ken")));
            assert_eq!(status, 200, "{path} with `{scheme}`: {body}");
        }
    }
    assert_eq!(request("POST", &format!("{a}/admin/route"), None).0, 401);
    // Probes stay open.
    assert_eq!(request("GET", &format!("{a}/healthz"), None).0, 200);
    assert_eq!(request("GET", &format!("{a}/readyz"), None).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_reads_stay_open_and_mutations_take_any_bearer_case() {
    let mock = Mock::start().await;
    let yaml = common::standard(&mock).raw("admin_token_env: MG_TEST_ADMIN_TOKEN").build();
    let mg = Modelgate::start_with_env(&yaml, &[("MG_TEST_ADMIN_TOKEN", "t0ken")]);
    let a = &mg.admin;
    assert_eq!(request("GET", &format!("{a}/admin/budgets"), None).0, 200);
    assert_eq!(request("GET", &format!("{a}/metrics"), None).0, 200);
    // A mutation: 401 without the token, authorized with `bearer` (the
    // route has no override, hence 404 once past the check).
    assert_eq!(request("DELETE", &format!("{a}/admin/overrides/mini"), None).0, 401);
    let (status, body) = request("DELETE", &format!("{a}/admin/overrides/mini"), Some("bearer t0ken"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has no override"), "{body}");
}
