//! systemd integration through the release binary: the unit passes
//! `systemd-analyze verify`, and the sd_notify protocol is spoken on a
//! fake `NOTIFY_SOCKET` (a Unix datagram socket bound by the test):
//! `READY=1` only once the listeners accept connections, `RELOADING=1` and
//! `READY=1` around a reload, `STOPPING=1` on SIGTERM.

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, write_config, Config, Kind};

fn yaml() -> String {
    Config::new().provider("openai", Kind::OpenAi, "http://127.0.0.1:9").model("gpt-4o-mini", "openai").prices(0.15, 0.6).build()
}

/// The next notification, within `limit`.
fn next(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Notifications until one contains `want` (all of them, in order).
fn until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let Some(m) = next(sock, deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))) else { break };
        let done = m.lines().any(|l| l == want);
        got.push(m);
        if done {
            break;
        }
    }
    got
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
}

/// modelgate started on free ports with a test-bound NOTIFY_SOCKET (what
/// systemd gives a `Type=notify` service); its stderr in `dir/stderr.log`.
struct Notified {
    dir: tempfile::TempDir,
    gateway: String,
    admin: String,
    sock: UnixDatagram,
    mg: Killed,
}

fn start_notified() -> Notified {
    let dir = tempfile::tempdir().unwrap();
    let (g, a) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let config = write_config(dir.path(), &g, &a, None, &yaml());
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mg = Killed(
        Command::new(bin())
            .args(["run", "-c"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("MODELGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    Notified { dir, gateway: g, admin: a, sock, mg }
}

#[test]
fn ready_after_the_listeners_accept_reload_reported_stopping_on_sigterm() {
    let Notified { dir, gateway: g, admin: a, sock, mut mg } = start_notified();
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

    let first = next(&sock, Duration::from_secs(20)).unwrap_or_else(|| panic!("no notification in 20 s:\n{}", log()));
    // Checked the moment READY=1 arrives: both listeners already accept.
    let (gw, adm) = (TcpStream::connect(&g), TcpStream::connect(&a));
    assert!(first.lines().any(|l| l == "READY=1"), "the first notification is READY=1: {first:?}");
    assert!(gw.is_ok() && adm.is_ok(), "READY=1 came before the listeners accepted: gateway {gw:?}, admin {adm:?}");
    assert!(!first.contains("MAINPID="), "a normal start does not claim MAINPID: {first:?}");
    assert!(log().contains("modelgate listening"), "{}", log());

    // A reload (SIGHUP) is reported: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
    signal(&mg.0, "HUP");
    let got = until(&sock, "READY=1", Duration::from_secs(10));
    assert!(got.len() >= 2 && got[0].lines().any(|l| l == "RELOADING=1") && got[0].contains("MONOTONIC_USEC="), "{got:?}");
    assert!(got.last().unwrap().lines().any(|l| l == "READY=1"), "{got:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(&mg.0, "TERM");
    let got = until(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(got.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")), "{got:?}\n{}", log());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = mg.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", log());
}

#[test]
fn a_stray_sigquit_without_a_new_process_is_ignored() {
    let Notified { dir, gateway: g, admin: _, sock, mut mg } = start_notified();
    assert!(until(&sock, "READY=1", Duration::from_secs(20)).iter().any(|m| m.contains("READY=1")));
    signal(&mg.0, "QUIT");
    std::thread::sleep(Duration::from_secs(2));
    assert!(mg.0.try_wait().unwrap().is_none(), "SIGQUIT with nobody waiting for the sockets ended the process");
    assert!(TcpStream::connect(&g).is_ok(), "still serving");
    assert!(next(&sock, Duration::from_millis(100)).is_none(), "no STOPPING=1 for an ignored SIGQUIT");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("no new modelgate waits"), "{log}");
}

/// `systemd-analyze verify` on systemd/modelgate.service with the binary
/// path substituted: no error and no warning.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed (scripts/test installs the `systemd` package)");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/modelgate.service")).unwrap();
    assert!(unit.contains("/usr/local/bin/modelgate"), "the unit runs /usr/local/bin/modelgate");
    let path = dir.path().join("modelgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/modelgate", &bin().display().to_string())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
    for want in ["Type=notify", "NotifyAccess=all", "User=modelgate", "StateDirectory=modelgate", "ExecReload=/usr/local/bin/modelgate upgrade"] {
        assert!(unit.contains(want), "the unit lacks {want}");
    }
    assert!(!unit.contains("DynamicUser=yes"), "DynamicUser puts state under /var/lib/private, out of the apps' reach");
    // Documentation= names a file the README's install steps install.
    let doc = unit.lines().find_map(|l| l.strip_prefix("Documentation=file:")).expect("Documentation=file:…");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains(&format!("README.md {doc}")), "the README's install steps do not install {doc}");
}
