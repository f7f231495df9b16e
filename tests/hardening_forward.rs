//! Forward-proxy hardening through the release binary, with raw sockets:
//! every plain request needs the proxy password, origin-form requests are
//! refused, blind tunnels never reach internal addresses (in any spelling)
//! unless allow-listed, and every place a client can stall has a deadline.
//!
//! Only loopback is used: internal targets are refused before any
//! connection, and the tunnels that do open go to listeners of this test.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Config, Kind, Mock, Modelgate};

/// Providers served by `mock` (openai injects the key `sk-injected` from
/// MG_TEST_KEY) and `forward` as the body of `forward_proxy:`.
fn config(mock: &Mock, forward: &str) -> String {
    Config::new()
        .raw(&format!("forward_proxy:\n{forward}"))
        .provider("openai", Kind::OpenAi, mock)
        .with("hosts: [api.openai.com], api_key_env: MG_TEST_KEY")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .build()
}

fn proxy_addr(mg: &Modelgate) -> String {
    mg.forward.as_deref().unwrap().trim_start_matches("http://").to_string()
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One HTTP response: (status, head, body). Reads a Content-Length or
/// chunked body, or (neither) to the end of the stream.
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let head = read_head(s);
    let status = head.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()) {
        body.resize(len, 0);
        s.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line = read_line(s);
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            s.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    } else {
        let _ = s.read_to_end(&mut body);
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") && s.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Send a request on a new connection and read the answer.
fn send(addr: &str, request: &str) -> (u16, String, String) {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s)
}

/// `CONNECT target`: (status, whole answer when refused, the stream).
fn connect_to(proxy: &str, target: &str) -> (u16, String, TcpStream) {
    let mut s = connect(proxy);
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    let status = head.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    if status != 200 {
        let _ = s.read_to_string(&mut rest);
    }
    (status, head + &rest, s)
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A chat request with `target` as its request-target; Host is the
/// target's authority (absolute-form), else api.openai.com.
fn post(target: &str, extra: &str) -> String {
    let host = target.split_once("://").map(|(_, r)| r.split('/').next().unwrap_or("")).unwrap_or("api.openai.com");
    format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{CHAT}", CHAT.len())
}

const AUTH: &str = "Proxy-Authorization: Basic YXBwOnMzY3JldA==\r\n"; // app:s3cret
const WRONG: &str = "Proxy-Authorization: Basic YXBwOndyb25n\r\n"; // app:wrong

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plain_request_needs_the_proxy_password_and_origin_form_is_refused() {
    let mock = Mock::start().await;
    let conf = config(&mock, "  intercept: [api.openai.com]\n  tunnel: false\n  auth_env: MG_TEST_PROXY_PASSWORD");
    let mg = Modelgate::start_with_env(&conf, &[("MG_TEST_PROXY_PASSWORD", "s3cret"), ("MG_TEST_KEY", "sk-injected")]);
    let proxy = proxy_addr(&mg);
    let close = "Connection: close\r\n";

    // Without (or with a wrong) password nothing is served, in any form.
    for (what, req) in [
        ("origin-form", post("/v1/chat/completions", close)),
        ("absolute-form", post("http://api.openai.com/v1/chat/completions", close)),
        ("absolute-form, trailing dot", post("http://api.openai.com./v1/chat/completions", close)),
        ("absolute-form, wrong password", post("http://api.openai.com/v1/chat/completions", &format!("{WRONG}{close}"))),
        ("https URL without CONNECT", post("https://api.openai.com/v1/chat/completions", close)),
        ("origin-form, wrong password", post("/v1/chat/completions", &format!("{WRONG}{close}"))),
    ] {
        let (status, head, body) = send(&proxy, &req);
        assert_eq!(status, 407, "{what}: {head}{body}");
        assert!(head.to_ascii_lowercase().contains("proxy-authenticate: basic realm=\"modelgate\""), "{what}: {head}");
    }
    assert_eq!(mock.calls(), 0, "no request reached the provider (with the injected key)");

    // With the password, origin-form is still refused, with what to do.
    let (status, head, body) = send(&proxy, &post("/v1/chat/completions", &format!("{AUTH}{close}")));
    assert_eq!(status, 400, "{head}{body}");
    assert!(body.contains("HTTPS_PROXY") && body.contains("gateway port"), "{body}");
    let (status, _, body) = send(&proxy, &post("https://api.openai.com/v1/chat/completions", &format!("{AUTH}{close}")));
    assert!(status == 400 && body.contains("CONNECT"), "{status} {body}");
    assert_eq!(mock.calls(), 0);

    // Authorized absolute-form requests are served; the password is
    // checked on each request of a kept-alive connection, not once.
    let mut s = connect(&proxy);
    // (The host in any case, with a trailing dot, is the provider's.)
    s.write_all(post("http://API.OpenAI.com./v1/chat/completions", AUTH).as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut s);
    assert_eq!(status, 200, "{head}{body}");
    assert_eq!(mock.last().headers["authorization"], "Bearer sk-injected");
    s.write_all(post("http://api.openai.com/v1/chat/completions", "").as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut s);
    assert_eq!(status, 407, "the second request on the connection has no password: {head}");
    assert_eq!(mock.calls(), 1);
}

/// A loopback listener that counts the connections it accepts.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            // Echo, so an allowed tunnel can be seen working.
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, n)
}

/// Names /etc/hosts maps to a loopback address (besides localhost).
fn loopback_names_in_etc_hosts() -> Vec<String> {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr: std::net::IpAddr = f.next()?.parse().ok()?;
            addr.is_loopback().then(|| f.map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .filter(|n| !n.eq_ignore_ascii_case("localhost"))
        .take(3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_never_reaches_internal_addresses_in_any_spelling() {
    let mock = Mock::start().await;
    let (open, accepted) = counting_listener();
    let closed = common::free_port();
    let mg = Modelgate::start_with_env(
        &config(&mock, &format!("  intercept: [api.openai.com]\n  allow_ports: [443, {open}, {closed}]\n  tunnel: true")),
        &[("MG_TEST_KEY", "k")],
    );
    let proxy = proxy_addr(&mg);
    let mut hosts: Vec<String> = [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "0177.0.0.1",
        "0x7f.1",
        "127.0.0.1.",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0",
        "0.0.0.0",
        "[::]",
        "localhost",
        "LOCALHOST.",
        "LocalHost",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    hosts.extend(loopback_names_in_etc_hosts());
    for host in &hosts {
        let (status, open_answer, _) = connect_to(&proxy, &format!("{host}:{open}"));
        assert_eq!(status, 403, "{host}:{open} must be refused: {open_answer}");
        assert!(open_answer.contains("internal address") && open_answer.contains("forward_proxy.allow_internal"), "{open_answer}");
        // A closed port gets the same answer: the refusal says nothing
        // about what is listening.
        let (status, closed_answer, _) = connect_to(&proxy, &format!("{host}:{closed}"));
        assert_eq!(status, 403, "{host}:{closed}: {closed_answer}");
        assert_eq!(open_answer.replace(&open.to_string(), "PORT"), closed_answer.replace(&closed.to_string(), "PORT"), "{host}");
    }
    // Not an address in any spelling: refused as malformed, never resolved.
    for bad in ["1.2.3.4.5", "127.0.0.256", "foo.0x10000000000", "example.123", "[::1", "[127.0.0.1]"] {
        let (status, answer, _) = connect_to(&proxy, &format!("{bad}:{open}"));
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no tunnel reached the loopback listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_internal_opens_exactly_the_listed_addresses() {
    let mock = Mock::start().await;
    let (open, accepted) = counting_listener();
    let closed = common::free_port();
    let fp = format!("  intercept: [api.openai.com]\n  allow_ports: [{open}, {closed}]\n  tunnel: true\n  allow_internal: [\"127.0.0.1\"]");
    let mg = Modelgate::start_with_env(&config(&mock, &fp), &[("MG_TEST_KEY", "k")]);
    let proxy = proxy_addr(&mg);
    for host in ["127.0.0.1", "127.1", "localhost"] {
        let (status, answer, mut s) = connect_to(&proxy, &format!("{host}:{open}"));
        assert_eq!(status, 200, "{host}: {answer}");
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping", "the tunnel carries bytes both ways");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // ::1 is loopback too, but not listed.
    let (status, answer, _) = connect_to(&proxy, &format!("[::1]:{open}"));
    assert_eq!(status, 403, "{answer}");
    // An allowed target that is down is a plain connection failure.
    let (status, answer, _) = connect_to(&proxy, &format!("127.0.0.1:{closed}"));
    assert_eq!(status, 502, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_reach_provider_hosts_only() {
    let mock = Mock::start().await;
    let (open, accepted) = counting_listener();
    let mg = Modelgate::start_with_env(&config(&mock, "  intercept: [api.openai.com]\n  tunnel: true"), &[("MG_TEST_KEY", "k")]);
    let proxy = proxy_addr(&mg);
    for host in [
        format!("127.0.0.1:{open}"),
        format!("localhost:{open}"),
        format!("2130706433:{open}"),
        format!("[::1]:{open}"),
        "169.254.169.254".to_string(),
        "example.com".to_string(),
    ] {
        let (status, head, body) = send(&proxy, &format!("GET http://{host}/latest/meta-data/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 403, "{host}: {head}{body}");
        assert!(body.contains("only to provider hosts"), "{body}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was fetched");
    assert_eq!(mock.calls(), 0);
}

/// Read until the proxy closes the connection; how long that took.
fn time_to_close(s: &mut TcpStream, from: Instant) -> (Duration, String) {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the proxy did not close the connection within 8 s ({e}); read so far: {}", String::from_utf8_lossy(&got)),
        }
    }
    (from.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

const TIMEOUTS: &str = "  head_timeout_ms: 1000\n  tls_handshake_timeout_ms: 1000\n  tunnel_idle_timeout_ms: 1000";

fn near(elapsed: Duration, limit_ms: u64) -> bool {
    elapsed >= Duration::from_millis(limit_ms - 50) && elapsed < Duration::from_millis(limit_ms + 900)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_trickling_request_head_is_closed_at_the_head_timeout() {
    let mock = Mock::start().await;
    let mg = Modelgate::start_with_env(&config(&mock, &format!("  intercept: [api.openai.com]\n  tunnel: false\n{TIMEOUTS}")), &[("MG_TEST_KEY", "k")]);
    let proxy = proxy_addr(&mg);

    // Connects and says nothing.
    let mut s = connect(&proxy);
    let (took, answer) = time_to_close(&mut s, Instant::now());
    assert!(near(took, 1000), "silent client closed after {took:?}");
    assert!(answer.contains(" 408 "), "{answer}");

    // Sends the CONNECT head one byte every 250 ms (it would take 10 s).
    let mut s = connect(&proxy);
    let started = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let (took, answer) = time_to_close(&mut s, started);
    assert!(near(took, 1000), "trickling client closed after {took:?}: {answer}");
    assert!(answer.contains(" 408 ") && answer.contains("within 1000 ms"), "{answer}");
    let _ = s.shutdown(std::net::Shutdown::Both);
    trickle.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_starts_tls_is_closed_at_the_handshake_timeout() {
    let mock = Mock::start().await;
    let fp = "  intercept: [api.openai.com]\n  tunnel: false\n  head_timeout_ms: 5000\n  tls_handshake_timeout_ms: 1000";
    let mg = Modelgate::start_with_env(&config(&mock, fp), &[("MG_TEST_KEY", "k")]);
    let (status, head, mut s) = connect_to(&proxy_addr(&mg), "api.openai.com:443");
    assert_eq!(status, 200, "{head}");
    let (took, got) = time_to_close(&mut s, Instant::now());
    assert!(near(took, 1000), "closed {took:?} after the CONNECT answer");
    assert!(got.is_empty(), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let mock = Mock::start().await;
    let (open, _) = counting_listener();
    let fp = format!("  intercept: [api.openai.com]\n  allow_ports: [{open}]\n  allow_internal: [\"127.0.0.1\"]\n{TIMEOUTS}");
    let mg = Modelgate::start_with_env(&config(&mock, &fp), &[("MG_TEST_KEY", "k")]);
    let (status, head, mut s) = connect_to(&proxy_addr(&mg), &format!("127.0.0.1:{open}"));
    assert_eq!(status, 200, "{head}");
    // Traffic every 400 ms for 2.4 s keeps it open past the 1 s limit …
    let opened = Instant::now();
    let mut last = opened;
    while opened.elapsed() < Duration::from_millis(2400) {
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        last = Instant::now();
        std::thread::sleep(Duration::from_millis(400));
    }
    // … and a second of silence closes it.
    let (took, got) = time_to_close(&mut s, last);
    assert!(near(took, 1000), "closed {took:?} after the last byte");
    assert!(got.is_empty(), "{got}");
}
