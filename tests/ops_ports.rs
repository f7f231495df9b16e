//! A listener whose address is taken ends the start at once: one line
//! naming the listener and the address, a non-zero exit, no panic text,
//! and no "listening" before anything was bound. (Before the fix Pingora
//! retried the bind for 30 s, panicked in its listener thread, and the
//! process stayed up serving nothing.)

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, write_config, Config, Kind};

fn yaml() -> String {
    Config::new().provider("openai", Kind::OpenAi, "http://127.0.0.1:9").model("gpt-4o-mini", "openai").prices(0.15, 0.6).build()
}

/// Run with `listen` addresses (gateway, admin, forward proxy) and return
/// (exit code, seconds taken, stderr).
fn run(gateway: &str, admin: &str, forward: Option<&str>) -> (Option<i32>, f64, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = yaml();
    if forward.is_some() {
        yaml.push_str("forward_proxy:\n  tunnel: true\n");
    }
    let config = write_config(dir.path(), gateway, admin, forward, &yaml);
    let started = Instant::now();
    let mut child =
        Command::new(bin()).args(["run", "-c"]).arg(&config).env("MODELGATE_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = started + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed().as_secs_f64();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.and_then(|s| s.code()), took, err)
}

fn assert_fails_fast(name: &str, busy: &str, (code, took, stderr): (Option<i32>, f64, String)) {
    assert!(code.is_some_and(|c| c != 0), "exit {code:?} after {took:.1}s; stderr:\n{stderr}");
    assert!(took < 3.0, "took {took:.1}s to give up");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(lines[0].contains(name) && lines[0].contains(busy) && lines[0].contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE") && !stderr.contains("listening"), "{stderr}");
}

#[test]
fn a_busy_gateway_port_fails_in_a_second_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    assert_fails_fast("gateway", &busy, run(&busy, &admin, None));
}

#[test]
fn a_busy_admin_port_fails_in_a_second_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let gateway = format!("127.0.0.1:{}", free_port());
    assert_fails_fast("admin", &busy, run(&gateway, &busy, None));
}

#[test]
fn a_busy_forward_proxy_port_fails_in_a_second_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let (gateway, admin) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    assert_fails_fast("forward proxy", &busy, run(&gateway, &admin, Some(&busy)));
}

#[test]
fn two_listeners_on_one_address_are_refused_before_binding() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (code, took, stderr) = run(&addr, &addr, None);
    assert!(code.is_some_and(|c| c != 0) && took < 3.0, "{code:?} {took}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
