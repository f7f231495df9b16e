//! Telling a service manager what the process is doing: systemd's
//! `sd_notify` protocol (`READY=1` once every listener accepts
//! connections, `RELOADING=1`/`READY=1` around a config reload,
//! `STOPPING=1` when a shutdown starts, `MAINPID=` when a binary upgrade's
//! new process takes over), and the readiness pipe of `modelgate upgrade`.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (and without
//! `MODELGATE_READY_FD`); a failed send is logged, never fatal.

use sd_notify::NotifyState;

/// The pipe `modelgate upgrade` waits on: the new process writes `ready`
/// to this descriptor once it serves.
pub const READY_FD_ENV: &str = "MODELGATE_READY_FD";

fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot tell the service manager {what} (sd_notify)");
    }
}

/// Every listener accepts connections and the config is loaded. A binary
/// upgrade's new process also names itself the service's main process.
pub fn ready(takes_over: bool) {
    let pid = std::process::id();
    if takes_over {
        send("READY=1", &[NotifyState::MainPid(pid), NotifyState::Ready, NotifyState::Status("serving (took over from the previous process)")]);
    } else {
        send("READY=1", &[NotifyState::Ready, NotifyState::Status("serving")]);
    }
    write_ready_pipe();
}

/// Re-announce this process as the main one (after the old process of an
/// upgrade exited: a manager that missed the first `MAINPID=` while it was
/// busy with the reload job gets it again).
pub fn main_pid() {
    send("MAINPID=", &[NotifyState::MainPid(std::process::id())]);
}

pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send("RELOADING=1", &states);
}

pub fn reloaded(applied: bool) {
    let status = if applied { "serving (config reloaded)" } else { "serving (config reload rejected; previous config kept)" };
    send("READY=1", &[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping, NotifyState::Status("draining requests in flight")]);
}

fn write_ready_pipe() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse::<i32>().ok()).filter(|fd| *fd > 2) else { return };
    // The descriptor is only valid if `modelgate upgrade` set it up; a
    // closed or foreign one makes fcntl fail and nothing is written.
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return;
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process for exactly this write; the File closes it afterwards.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = f.write_all(b"ready\n");
}
