//! Transparent mode through the release binary: clients that keep their
//! real provider URLs (https://api.openai.com …) and set HTTPS_PROXY reach
//! local mocks through modelgate's pipeline; other hosts are tunnelled
//! untouched; refusals are clear.
//!
//! No byte leaves loopback: every intercepted host is served by a Mock via
//! provider config, and the proxies here refuse to tunnel (tunnel: false)
//! except in the test that tunnels to a local TLS server (allow-listed with
//! forward_proxy.allow_internal) — so a bug that tunnelled a real provider
//! host fails the test instead of reaching it.

mod common;

use std::process::Command;

use common::tls::{pki, tls_front};
use common::{transparent_config as config, Mock, Modelgate};
use serde_json::Value;

const NO_TUNNEL: &str = "  intercept: [api.openai.com, api.anthropic.com]\n  tunnel: false";

fn ca_path(mg: &Modelgate) -> std::path::PathBuf {
    mg.dir.path().join("state/ca/ca.pem")
}

/// curl through the forward proxy; returns (status line + headers, body, exit ok).
fn curl(args: &[&str]) -> (String, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl").args(["-sS", "--max-time", "10", "-D"]).arg(&headers).args(args).output().expect("run curl");
    (
        std::fs::read_to_string(&headers).unwrap_or_default(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        out.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_reaches_the_pipeline_over_http1_and_h2() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&config(&mock, NO_TUNNEL));
    let proxy = mg.forward.clone().unwrap();
    let ca = ca_path(&mg);
    assert!(ca.exists(), "run creates the CA on first start");
    let key = mg.dir.path().join("state/ca/ca-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the CA key is private");
    assert!(!mg.stderr().contains("PRIVATE KEY"), "the CA key is never logged");

    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for http in ["--http1.1", "--http2"] {
        let (head, out, ok) = curl(&[
            "-x",
            &proxy,
            "--cacert",
            ca.to_str().unwrap(),
            http,
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer sk-app",
            "-d",
            body,
            "https://api.openai.com/v1/chat/completions",
        ]);
        assert!(ok, "{http}: {out}\n{}", mg.stderr());
        let status_line = head.lines().rfind(|l| l.starts_with("HTTP/")).unwrap_or_default().to_string();
        assert!(status_line.contains(" 200"), "{http}: {head}");
        if http == "--http2" {
            assert!(status_line.starts_with("HTTP/2"), "ALPN negotiated h2: {head}");
        }
        assert!(head.to_ascii_lowercase().contains("x-modelgate-model: gpt-4o-mini"), "{head}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
        // The provider (a local mock) got the routed model and the app's own key.
        let last = mock.last();
        assert_eq!((last.path.as_str(), last.json()["model"].as_str()), ("/v1/chat/completions", Some("gpt-4o-mini")));
        assert_eq!(last.headers["authorization"], "Bearer sk-app");
    }
    // Streaming, and the Anthropic host.
    let (_, out, ok) = curl(&[
        "-x",
        &proxy,
        "--cacert",
        ca.to_str().unwrap(),
        "-N",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"claude-haiku","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        "https://api.anthropic.com/v1/messages",
    ]);
    assert!(ok && out.contains("event: message_stop") && out.contains("Hello"), "{out}");
    assert_eq!(mock.last().json()["model"], "claude-haiku-4-5-20251001");
    // The request is in the access log and the metrics like any other.
    let log = mg.wait_access_log(3);
    assert!(log.iter().any(|l| l["model"] == "claude-haiku" && l["status"] == 200 && l["stream"] == true), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_are_tunnelled_untouched_or_refused() {
    let mock = Mock::start().await;
    let (server_ca, cert, key) = pki();
    let tls_port = tls_front(mock.addr, cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let server_ca_path = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca_path, server_ca).unwrap();

    // The local TLS server is on loopback, which the proxy refuses to
    // tunnel to unless allow-listed: the point of allow_internal.
    let mg = Modelgate::start(&config(
        &mock,
        &format!("  intercept: [api.openai.com]\n  allow_ports: [443, {tls_port}]\n  tunnel: true\n  allow_internal: [\"127.0.0.1\"]"),
    ));
    let proxy = mg.forward.clone().unwrap();
    let url = format!("https://localhost:{tls_port}/v1/models");
    // The client sees the server's own certificate: its CA verifies it …
    let (head, out, ok) = curl(&["-x", &proxy, "--cacert", server_ca_path.to_str().unwrap(), &url]);
    assert!(ok && head.contains(" 200"), "{head}{out}");
    assert!(out.contains("gpt-4o"), "the mock's model list came through the tunnel: {out}");
    assert!(!head.to_ascii_lowercase().contains("x-modelgate"), "tunnelled traffic is not touched: {head}");
    // … and modelgate's CA does not (no interception happened).
    let (_, out, ok) = curl(&["-x", &proxy, "--cacert", ca_path(&mg).to_str().unwrap(), &url]);
    assert!(!ok, "a tunnelled host must not be served with a modelgate certificate: {out}");

    // A port not on allow_ports is refused.
    let (head, _, ok) = curl(&["-x", &proxy, "--cacert", server_ca_path.to_str().unwrap(), "https://localhost:8443/"]);
    assert!(!ok && head.contains("403"), "{head}");

    // With tunnelling off, a host not on the intercept list is refused.
    let mg = Modelgate::start(&config(&mock, &format!("  intercept: [api.openai.com]\n  allow_ports: [443, {tls_port}]\n  tunnel: false")));
    let (head, _, ok) = curl(&["-x", mg.forward.as_deref().unwrap(), "--cacert", server_ca_path.to_str().unwrap(), &url]);
    assert!(!ok && head.contains("403"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_and_plain_http_proxying() {
    let mock = Mock::start().await;
    let conf = config(&mock, &format!("{NO_TUNNEL}\n  auth_env: MG_TEST_PROXY_PASSWORD"));
    let mg = Modelgate::start_with_env(&conf, &[("MG_TEST_PROXY_PASSWORD", "s3cret")]);
    let ca = ca_path(&mg);
    let port = mg.forward.as_deref().unwrap().trim_start_matches("http://").to_string();
    let calls = mock.calls();
    let (head, _, ok) = curl(&["-x", &format!("http://{port}"), "--cacert", ca.to_str().unwrap(), "https://api.openai.com/v1/models"]);
    assert!(!ok && head.contains("407"), "no credentials: {head}");
    let (head, _, ok) = curl(&["-x", &format!("http://app:wrong@{port}"), "--cacert", ca.to_str().unwrap(), "https://api.openai.com/v1/models"]);
    assert!(!ok && head.contains("407"), "wrong password: {head}");
    assert_eq!(mock.calls(), calls, "nothing reached the provider");
    let (head, out, ok) = curl(&["-x", &format!("http://app:s3cret@{port}"), "--cacert", ca.to_str().unwrap(), "https://api.openai.com/v1/models"]);
    assert!(ok && head.contains(" 200") && out.contains("gpt-4o"), "{head}{out}");

    // Plain HTTP_PROXY requests (absolute-form) to a provider's host go
    // through the pipeline too: here the mock's own address is its host.
    let mock_host = mock.addr.to_string();
    let plain = config(&mock, NO_TUNNEL).replace("hosts: [api.openai.com]", "hosts: [api.openai.com, \"127.0.0.1\"]");
    let mg = Modelgate::start(&plain);
    let (head, out, ok) = curl(&[
        "-x",
        mg.forward.as_deref().unwrap(),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"gpt-4o","messages":[]}"#,
        &format!("http://{mock_host}/v1/chat/completions"),
    ]);
    assert!(ok && head.to_ascii_lowercase().contains("x-modelgate-model: gpt-4o-mini"), "{head}{out}");
}

/// As on the gateway: a client connected to the forward proxy just before
/// SIGTERM whose request arrives just after is still answered, then the
/// process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_connection_accepted_just_before_sigterm_is_still_answered() {
    use std::io::{Read, Write};
    let mock = Mock::start().await;
    let mock_host = mock.addr.to_string();
    let plain = config(&mock, NO_TUNNEL).replace("hosts: [api.openai.com]", "hosts: [api.openai.com, \"127.0.0.1\"]");
    let mut mg = Modelgate::start(&plain);
    let forward = mg.forward.clone().unwrap();
    let mut s = std::net::TcpStream::connect(&forward["http://".len()..]).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    mg.signal("TERM");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let head = format!(
        "POST http://{mock_host}/v1/chat/completions HTTP/1.1\r\nHost: {mock_host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes()).unwrap_or_else(|e| panic!("the accepted connection was dropped at SIGTERM: {e}\n{}", mg.stderr()));
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let answer = String::from_utf8_lossy(&got);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"choices\""),
        "the request on a connection accepted before SIGTERM: {answer:?}\n{}",
        mg.stderr()
    );
    let status = mg.wait_exit(std::time::Duration::from_secs(5)).unwrap_or_else(|| panic!("modelgate did not exit after the drain:\n{}", mg.stderr()));
    assert!(status.success(), "{status:?}\n{}", mg.stderr());
}

#[test]
fn an_open_proxy_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.yaml");
    std::fs::write(&path, "listen:\n  forward_proxy: 0.0.0.0:18081\nproviders:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("listen.forward_proxy") && text.contains("allow_clients") && text.contains("open proxy"), "{text}");
    // `run` refuses the same file before listening.
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["run", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    // With an allow-list it is valid.
    std::fs::write(&path, "listen:\n  forward_proxy: 0.0.0.0:18081\nforward_proxy:\n  allow_clients: [10.0.0.0/8, \"192.168.1.7\"]\nproviders:\n  openai: { kind: openai, base_url: \"http://127.0.0.1:9/v1\" }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ca_commands_create_show_and_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    std::fs::write(
        &conf,
        format!("state_dir: {}\nproviders:\n  openai: {{ kind: openai, base_url: \"http://127.0.0.1:9/v1\" }}\n", dir.path().join("state").display()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_modelgate")).args(args).arg("-c").arg(&conf).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["ca", "init"]).contains("created"));
    let pem = std::fs::read_to_string(dir.path().join("state/ca/ca.pem")).unwrap();
    assert!(run(&["ca", "init"]).contains("already there"), "init keeps an existing CA");
    assert_eq!(std::fs::read_to_string(dir.path().join("state/ca/ca.pem")).unwrap(), pem);
    let shown = run(&["ca", "show"]);
    assert!(shown.starts_with("-----BEGIN CERTIFICATE-----") && shown.contains(pem.trim()));
    for hint in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "--cacert", "update-ca-certificates"] {
        assert!(shown.contains(hint), "ca show explains {hint}");
    }
    assert!(!shown.contains("PRIVATE KEY"));
    let out = dir.path().join("bundle.pem");
    assert!(run(&["ca", "bundle", "--out", out.to_str().unwrap()]).contains("system roots"));
    let bundle = std::fs::read_to_string(&out).unwrap();
    assert!(bundle.ends_with(&pem) || bundle.contains(pem.trim()), "the bundle ends with the modelgate CA");
    assert!(bundle.matches("BEGIN CERTIFICATE").count() >= 2, "system roots are in the bundle too");
}
